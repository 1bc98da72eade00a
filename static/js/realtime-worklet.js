// The Realtime page's microphone, in the audio thread: each block of samples, at whatever
// rate the device runs, is resampled to the session's rate (24 kHz) by linear
// interpolation and sent to the page as PCM16 in frames of 40 ms, with its loudness.

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const target = options.processorOptions?.targetRate || 24000;
    this.step = sampleRate / target; // input samples per output sample
    this.position = 0; // where the next output sample falls, in the input (may be < 0)
    this.previous = 0; // the last input sample of the previous block
    this.frame = new Int16Array(Math.round(target * 0.04));
    this.filled = 0;
    this.energy = 0;
  }

  process(inputs) {
    const channel = inputs[0]?.[0];
    if (!channel) return true;
    const step = this.step;
    let position = this.position;
    while (position < channel.length - 1) {
      const index = Math.floor(position);
      const fraction = position - index;
      const before = index < 0 ? this.previous : channel[index];
      const after = channel[index + 1];
      const sample = before + (after - before) * fraction;
      this.push(sample);
      position += step;
    }
    this.position = position - channel.length;
    this.previous = channel[channel.length - 1];
    return true;
  }

  push(sample) {
    const clamped = Math.max(-1, Math.min(1, sample));
    this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    this.energy += clamped * clamped;
    if (this.filled === this.frame.length) {
      const level = Math.sqrt(this.energy / this.filled);
      const pcm = this.frame.buffer.slice(0);
      this.port.postMessage({ pcm, level }, [pcm]);
      this.filled = 0;
      this.energy = 0;
    }
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);

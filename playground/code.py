"""The playground's requests as code: curl, Python and JavaScript against the console's /v1 API.

The snippets carry a placeholder for the key (`$MIRA_API_KEY`, read from the
environment in Python and JavaScript), never a secret.
"""

import copy
import json
import shlex
from dataclasses import dataclass
from typing import Any

from django.utils.safestring import SafeString

from playground.rendering import highlight

SHORT_IMAGE = 64  # characters of an image's data: URI kept in a snippet


@dataclass
class Snippet:
    id: str
    label: str
    language: str
    code: str

    @property
    def html(self) -> SafeString:
        return highlight(self.code, self.language)


def shorten_images(body: dict) -> tuple[dict, bool]:
    """The body with image data cut short for reading, and whether anything was cut."""
    body = copy.deepcopy(body)
    cut = False
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            url = (part.get("image_url") or {}).get("url", "") if isinstance(part, dict) else ""
            if len(url) > SHORT_IMAGE:
                part["image_url"]["url"] = url[:SHORT_IMAGE] + "…"
                cut = True
    return body, cut


def _python(value: Any, indent: int = 0) -> str:
    pad, inner = "    " * indent, "    " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_python(v, indent + 1)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        if all(not isinstance(v, dict | list) for v in value) and len(value) <= 4:
            return "[" + ", ".join(_python(v) for v in value) + "]"
        items = [f"{inner}{_python(v, indent + 1)}," for v in value]
        return "[\n" + "\n".join(items) + f"\n{pad}]"
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "None"
    # JSON strings and numbers are Python literals too.
    return json.dumps(value, ensure_ascii=False)


def curl(body: dict, base_url: str, path: str = "/chat/completions") -> str:
    data = json.dumps(body, indent=2, ensure_ascii=False)
    return (
        f"curl {base_url}{path} \\\n"
        '  -H "Content-Type: application/json" \\\n'
        '  -H "Authorization: Bearer $MIRA_API_KEY" \\\n'
        f"  -d {shlex.quote(data)}"
    )


def python(body: dict, base_url: str) -> str:
    arguments = "\n".join(f"    {name}={_python(value, 1)}," for name, value in body.items())
    return (
        "import os\n\n"
        "from openai import OpenAI\n\n"
        "client = OpenAI(\n"
        f"    base_url={json.dumps(base_url)},\n"
        '    api_key=os.environ["MIRA_API_KEY"],\n'
        ")\n\n"
        "completion = client.chat.completions.create(\n"
        f"{arguments}\n"
        ")\n"
        "print(completion.choices[0].message.content)\n"
    )


def javascript(body: dict, base_url: str) -> str:
    data = json.dumps(body, indent=2, ensure_ascii=False)
    return (
        'import OpenAI from "openai";\n\n'
        "const client = new OpenAI({\n"
        f"  baseURL: {json.dumps(base_url)},\n"
        "  apiKey: process.env.MIRA_API_KEY,\n"
        "});\n\n"
        f"const completion = await client.chat.completions.create({data});\n"
        "console.log(completion.choices[0].message.content);\n"
    )


def snippets(body: dict, base_url: str) -> list[Snippet]:
    return [
        Snippet("curl", "curl", "bash", curl(body, base_url)),
        Snippet("python", "Python", "python", python(body, base_url)),
        Snippet("javascript", "JavaScript", "javascript", javascript(body, base_url)),
    ]


# The parameters the OpenAI SDKs name for images.generate; the rest go in the body as they are.
IMAGE_SDK_PARAMS = ("prompt", "model", "size", "quality", "n", "response_format", "style", "user")
_CLIENT_PY = (
    "import os\n\n"
    "from openai import OpenAI\n\n"
    "client = OpenAI(\n"
    "    base_url={base_url},\n"
    '    api_key=os.environ["MIRA_API_KEY"],\n'
    ")\n\n"
)
_CLIENT_JS = (
    'import OpenAI from "openai";\n\n'
    "const client = new OpenAI({{\n"
    "  baseURL: {base_url},\n"
    "  apiKey: process.env.MIRA_API_KEY,\n"
    "}});\n\n"
)


def image_snippets(body: dict, base_url: str) -> list[Snippet]:
    """An images.generate request; `reference_images` travels as an extra body field."""
    named = {k: v for k, v in body.items() if k in IMAGE_SDK_PARAMS}
    extra = {k: v for k, v in body.items() if k not in IMAGE_SDK_PARAMS}
    arguments = [f"    {name}={_python(value, 1)}," for name, value in named.items()]
    if extra:
        arguments.append(f"    extra_body={_python(extra, 1)},")
    python_code = (
        _CLIENT_PY.format(base_url=json.dumps(base_url))
        + "result = client.images.generate(\n"
        + "\n".join(arguments)
        + "\n)\nfor image in result.data:\n    print(image.url)\n"
    )
    data = json.dumps(body, indent=2, ensure_ascii=False)
    javascript_code = (
        _CLIENT_JS.format(base_url=json.dumps(base_url))
        + f"const result = await client.images.generate({data});\n"
        + "for (const image of result.data) console.log(image.url);\n"
    )
    return [
        Snippet("curl", "curl", "bash", curl(body, base_url, "/images/generations")),
        Snippet("python", "Python", "python", python_code),
        Snippet("javascript", "JavaScript", "javascript", javascript_code),
    ]


def _post_snippets(path: str, body: dict, base_url: str, shown: str = "") -> list[Snippet]:
    """A request to a path the OpenAI SDKs have no method for, sent with their plain POST;
    `shown` is the answer's field printed (the whole answer when blank)."""
    python_code = (
        _CLIENT_PY.format(base_url=json.dumps(base_url))
        + "answer = client.post(\n"
        + f"    {json.dumps(path)},\n"
        + f"    body={_python(body, 1)},\n"
        + "    cast_to=object,\n"
        + f")\nprint(answer{f'[{json.dumps(shown)}]' if shown else ''})\n"
    )
    data = json.dumps(body, indent=2, ensure_ascii=False).replace("\n", "\n  ")
    javascript_code = (
        _CLIENT_JS.format(base_url=json.dumps(base_url))
        + f"const answer = await client.post({json.dumps(path)}, {{\n  body: {data},\n}});\n"
        + f"console.log(answer{f'.{shown}' if shown else ''});\n"
    )
    return [
        Snippet("curl", "curl", "bash", curl(body, base_url, path)),
        Snippet("python", "Python", "python", python_code),
        Snippet("javascript", "JavaScript", "javascript", javascript_code),
    ]


def _sdk_snippets(
    method: str, path: str, body: dict, base_url: str, *, python_then: str, javascript_then: str
) -> list[Snippet]:
    """A request made with an OpenAI SDK method (`method`, e.g. "embeddings.create"), its
    answer named `result` and used by the lines that follow."""
    arguments = "\n".join(f"    {name}={_python(value, 1)}," for name, value in body.items())
    python_code = (
        _CLIENT_PY.format(base_url=json.dumps(base_url))
        + f"result = client.{method}(\n{arguments}\n)\n{python_then}"
    )
    data = json.dumps(body, indent=2, ensure_ascii=False)
    javascript_code = (
        _CLIENT_JS.format(base_url=json.dumps(base_url))
        + f"const result = await client.{method}({data});\n{javascript_then}"
    )
    return [
        Snippet("curl", "curl", "bash", curl(body, base_url, path)),
        Snippet("python", "Python", "python", python_code),
        Snippet("javascript", "JavaScript", "javascript", javascript_code),
    ]


def embedding_snippets(body: dict, base_url: str) -> list[Snippet]:
    """An embeddings.create request, printing each vector's length."""
    return _sdk_snippets(
        "embeddings.create", "/embeddings", body, base_url,
        python_then="for item in result.data:\n    print(item.index, len(item.embedding))\n",
        javascript_then="for (const item of result.data) console.log(item.index, item.embedding.length);\n",
    )  # fmt: skip


def response_snippets(body: dict, base_url: str) -> list[Snippet]:
    """A responses.create request, printing the output text."""
    return _sdk_snippets(
        "responses.create", "/responses", body, base_url,
        python_then="print(result.output_text)\n",
        javascript_then="console.log(result.output_text);\n",
    )  # fmt: skip


def vision_snippets(body: dict, base_url: str) -> list[Snippet]:
    """A vision/locate request, sent with the OpenAI SDKs' plain POST."""
    return _post_snippets("/vision/locate", body, base_url)


def fetch_snippets(body: dict, base_url: str) -> list[Snippet]:
    """A fetch request, printing the page's content."""
    return _post_snippets("/fetch", body, base_url, shown="content")


# The OpenAI SDKs' audio methods ask for a model; the console's speech takes any name here.
SPEECH_MODEL = "mira"


def speech_snippets(body: dict, base_url: str) -> list[Snippet]:
    """An audio/speech request: the audio is written to a file as it arrives."""
    extension = body.get("response_format", "mp3")
    named = {"model": body.get("model", SPEECH_MODEL)} | body
    arguments = "\n".join(f"    {name}={_python(value, 1)}," for name, value in named.items())
    python_code = (
        _CLIENT_PY.format(base_url=json.dumps(base_url))
        + "with client.audio.speech.with_streaming_response.create(\n"
        + arguments
        + f'\n) as response:\n    response.stream_to_file("speech.{extension}")\n'
    )
    curl_code = curl(body, base_url, "/audio/speech") + f" \\\n  --output speech.{extension}"
    return [
        Snippet("curl", "curl", "bash", curl_code),
        Snippet("python", "Python", "python", python_code),
    ]


def transcription_snippets(
    fields: dict, base_url: str, filename: str = "audio.wav"
) -> list[Snippet]:
    """An audio/transcriptions request of a local file (the form's other fields as they were)."""
    form = " \\\n".join(f"  -F {shlex.quote(f'{k}={v}')}" for k, v in fields.items())
    curl_code = (
        f"curl {base_url}/audio/transcriptions \\\n"
        '  -H "Authorization: Bearer $MIRA_API_KEY" \\\n'
        f"  -F file=@{shlex.quote(filename)}" + (" \\\n" + form if form else "")
    )
    named = {"model": fields.get("model", SPEECH_MODEL)} | fields
    arguments = "".join(f"        {k}={_python(v, 2)},\n" for k, v in named.items())
    python_code = (
        _CLIENT_PY.format(base_url=json.dumps(base_url))
        + f'with open({json.dumps(filename)}, "rb") as audio:\n'
        + "    transcript = client.audio.transcriptions.create(\n"
        + "        file=audio,\n"
        + arguments
        + "    )\nprint(transcript.text)\n"
    )
    return [
        Snippet("curl", "curl", "bash", curl_code),
        Snippet("python", "Python", "python", python_code),
    ]


# Music and video are jobs: one call starts one, then it is asked after until it ends.
_JOB_PATHS = {"music": ("/audio/music", "audio_url"), "video": ("/video/generate", "video_url")}


def job_snippets(kind: str, body: dict, base_url: str) -> list[Snippet]:
    """A music or video job: started with the OpenAI SDKs' plain POST, then polled."""
    path, field = _JOB_PATHS[kind]
    python_code = (
        "import time\n\n"
        + _CLIENT_PY.format(base_url=json.dumps(base_url))
        + f"job = client.post(\n    {json.dumps(path)},\n    body={_python(body, 1)},\n"
        + "    cast_to=object,\n)\n"
        + 'while job["status"] in ("queued", "running"):\n'
        + "    time.sleep(2)\n"
        + f"    job = client.get(f\"{path}/{{job['id']}}\", cast_to=object)\n"
        + f'print(job["status"], job.get("{field}"))\n'
    )
    data = json.dumps(body, indent=2, ensure_ascii=False).replace("\n", "\n  ")
    javascript_code = (
        _CLIENT_JS.format(base_url=json.dumps(base_url))
        + f'let job = await client.post("{path}", {{\n  body: {data},\n}});\n'
        + 'while (job.status === "queued" || job.status === "running") {\n'
        + "  await new Promise((resolve) => setTimeout(resolve, 2000));\n"
        + f"  job = await client.get(`{path}/${{job.id}}`);\n"
        + "}\n"
        + f"console.log(job.status, job.{field});\n"
    )
    return [
        Snippet("curl", "curl", "bash", curl(body, base_url, path)),
        Snippet("python", "Python", "python", python_code),
        Snippet("javascript", "JavaScript", "javascript", javascript_code),
    ]

"""Model output becomes Markdown with highlighted code, and never markup of the model's choosing."""

from playground.rendering import language_of, render_markdown


def test_script_in_a_reply_is_shown_as_text():
    html = render_markdown('<script>alert(1)</script> and <img src=x onerror="alert(2)">')
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '&lt;img src=x onerror="alert(2)"&gt;' in html


def test_links_keep_only_safe_schemes_and_open_in_a_new_tab():
    html = render_markdown(
        "[a](javascript:alert(1)) [b](data:text/html,x) [c](https://example.com)"
    )
    assert "javascript:" not in html.split("[a]")[0] and 'href="javascript' not in html
    assert 'href="data:' not in html
    assert 'href="https://example.com"' in html
    assert 'rel="noopener noreferrer nofollow"' in html and 'target="_blank"' in html


def test_images_are_not_loaded_from_wherever_the_model_points():
    assert "<img" not in render_markdown("![tracker](https://example.com/pixel.gif)")


def test_code_blocks_are_highlighted_and_escaped():
    html = render_markdown('```python\ndef f():\n    return "<b>"\n```')
    assert '<div class="pg-code" data-lang="python">' in html
    assert '<span class="t-k">def</span>' in html
    assert "&lt;b&gt;" in html and "<b>" not in html


def test_an_unknown_or_hostile_fence_language_is_harmless():
    html = render_markdown('```"><script>x</script>\nplain\n```')
    assert "<script" not in html
    assert 'data-lang="scriptxscript"' in html or 'data-lang=""' in html
    assert "plain" in render_markdown("```nosuchlanguage\nplain\n```")
    assert language_of('js" onload="x') == "js"


def test_an_unfinished_code_block_renders_while_streaming():
    html = render_markdown("Here:\n\n```js\nconst a = 1;")
    assert 'data-lang="js"' in html and "const" in html


def test_tables_align_with_classes_not_inline_styles():
    html = render_markdown("| a | b |\n|:--|--:|\n| 1 | 2 |")
    assert "style=" not in html
    assert '<th class="pg-left">a</th>' in html and '<td class="pg-right">2</td>' in html


def test_sanitizer_drops_attributes_and_classes_outside_the_allow_list():
    # Even if the parser let markup through, only the allow-list would survive.
    from playground.rendering import _CLEANER

    cleaned = _CLEANER.clean(
        '<div class="pg-code evil" onclick="x" style="position:fixed">'
        '<span class="t-k other">k</span><iframe src="x"></iframe></div>'
    )
    assert cleaned == '<div class="pg-code"><span class="t-k">k</span></div>'

"""Model output as HTML: Markdown with highlighted code, sanitized before it reaches a page.

Model text is untrusted. It is parsed as CommonMark with raw HTML turned off (a
`<script>` in a reply is shown as text), code blocks are highlighted by Pygments
(which escapes what it prints), and the result goes through nh3 with a short
allow-list of tags, attributes, classes and link schemes, so that a bug in either
of the first two cannot put markup of the model's choosing on the page.
"""

import re

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments import highlight as pygments_highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.lexers.special import TextLexer
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

TOKEN_PREFIX = "t-"
_LANGUAGE = re.compile(r"[^a-z0-9+#._-]")
_ALIGN = {
    "text-align:left": "pg-left",
    "text-align:center": "pg-center",
    "text-align:right": "pg-right",
}
_TOKEN_CLASSES = {TOKEN_PREFIX + name for name in STANDARD_TYPES.values() if name}
_FORMATTER = HtmlFormatter(nowrap=True, classprefix=TOKEN_PREFIX)

_CLEANER = nh3.Cleaner(
    tags={
        "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s",
        "code", "pre", "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody",
        "tr", "th", "td", "div", "span",
    },
    clean_content_tags={"script", "style"},
    attributes={"a": {"href", "title"}, "ol": {"start"}, "div": {"data-lang"}},
    allowed_classes={
        "div": {"pg-code"},
        "span": _TOKEN_CLASSES,
        "th": set(_ALIGN.values()),
        "td": set(_ALIGN.values()),
    },
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer nofollow",
)  # fmt: skip


def language_of(info: str) -> str:
    """The language named after a code fence, reduced to a safe, short word."""
    word = info.strip().split(maxsplit=1)[0].lower() if info.strip() else ""
    return _LANGUAGE.sub("", word)[:24]


def highlight(code: str, language: str) -> SafeString:
    """Code as highlighted, escaped HTML spans (no wrapper), for any language Pygments knows."""
    try:
        lexer = get_lexer_by_name(language) if language else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    # Pygments escapes every character of the code it formats.
    return mark_safe(pygments_highlight(code, lexer, _FORMATTER))  # noqa: S308


def _fence(
    self: RendererHTML, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    language = language_of(token.info)
    return (
        f'<div class="pg-code" data-lang="{language}">'
        f"<pre><code>{highlight(token.content, language)}</code></pre></div>\n"
    )


def _code_block(
    self: RendererHTML, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    code = highlight(tokens[idx].content, "")
    return f'<div class="pg-code" data-lang=""><pre><code>{code}</code></pre></div>\n'


def _alignment_as_classes(state) -> None:
    """Tables align cells with a style attribute, which the page's CSP forbids: use classes."""
    for token in state.tokens:
        if token.type in ("th_open", "td_open") and token.attrs.get("style"):
            token.attrs = {"class": _ALIGN.get(str(token.attrs["style"]), "")}


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    # Images would load from wherever the model points (and the CSP blocks them anyway).
    md.disable("image")
    md.add_render_rule("fence", _fence)
    md.add_render_rule("code_block", _code_block)
    md.core.ruler.push("alignment_as_classes", _alignment_as_classes)
    return md


_MARKDOWN = _parser()


def render_markdown(text: str) -> SafeString:
    """A model's Markdown as sanitized HTML, safe to put in a page as it is."""
    if not text:
        return mark_safe("")  # noqa: S308
    # The allow-list above is the guarantee; nh3 output is safe by construction.
    return mark_safe(_CLEANER.clean(_MARKDOWN.render(text)))  # noqa: S308

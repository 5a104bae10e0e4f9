// Markdown to safe HTML: marked parses, highlight.js colours code, DOMPurify sanitises.
// Nothing from a model or a user reaches the DOM without going through `renderMarkdown`
// (or Preact's text escaping).
import { Marked } from "../vendor/marked.mjs";
import DOMPurify from "../vendor/purify.mjs";
import hljs from "../vendor/hljs-core.mjs";
import bash from "../vendor/hljs/bash.mjs";
import c from "../vendor/hljs/c.mjs";
import cpp from "../vendor/hljs/cpp.mjs";
import css from "../vendor/hljs/css.mjs";
import diff from "../vendor/hljs/diff.mjs";
import go from "../vendor/hljs/go.mjs";
import ini from "../vendor/hljs/ini.mjs";
import java from "../vendor/hljs/java.mjs";
import javascript from "../vendor/hljs/javascript.mjs";
import json from "../vendor/hljs/json.mjs";
import markdown from "../vendor/hljs/markdown.mjs";
import plaintext from "../vendor/hljs/plaintext.mjs";
import python from "../vendor/hljs/python.mjs";
import rust from "../vendor/hljs/rust.mjs";
import shell from "../vendor/hljs/shell.mjs";
import sql from "../vendor/hljs/sql.mjs";
import typescript from "../vendor/hljs/typescript.mjs";
import xml from "../vendor/hljs/xml.mjs";
import yaml from "../vendor/hljs/yaml.mjs";

const LANGUAGES = { bash, c, cpp, css, diff, go, ini, java, javascript, json, markdown, plaintext,
  python, rust, shell, sql, typescript, xml, yaml };
for (const [name, lang] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, lang);
hljs.registerAliases(["sh", "zsh", "console"], { languageName: "bash" });
hljs.registerAliases(["toml"], { languageName: "ini" });
hljs.registerAliases(["js", "jsx", "mjs"], { languageName: "javascript" });
hljs.registerAliases(["ts", "tsx"], { languageName: "typescript" });
hljs.registerAliases(["py"], { languageName: "python" });
hljs.registerAliases(["rs"], { languageName: "rust" });
hljs.registerAliases(["html", "svg"], { languageName: "xml" });
hljs.registerAliases(["yml"], { languageName: "yaml" });

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]);
}

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    code({ text, lang }) {
      const language = (lang || "").trim().split(/\s+/)[0].toLowerCase();
      let body;
      if (language && hljs.getLanguage(language)) {
        body = hljs.highlight(text, { language, ignoreIllegals: true }).value;
      } else {
        body = escapeHtml(text);
      }
      const label = escapeHtml(language || "text");
      return `<div class="code-block"><div class="code-head"><span class="code-lang">${label}</span>` +
        `<button type="button" class="copy-code" data-copy-code>Copy</button></div>` +
        `<pre><code class="hljs">${body}</code></pre></div>`;
    },
  },
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "input", "textarea", "select", "iframe", "object", "embed", "svg", "math"],
  FORBID_ATTR: ["style", "srcset"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#|\/(?!\/))/i,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  if (node.tagName === "IMG") {
    // Remote images would leak that the message was read; only data: and our own are shown.
    const src = node.getAttribute("src") || "";
    if (!/^(data:image\/|\/)/i.test(src)) node.removeAttribute("src");
    node.setAttribute("loading", "lazy");
  }
});

/** Markdown (from a model or a user) as sanitised HTML. */
export function renderMarkdown(text) {
  const html = marked.parse(String(text ?? ""), { async: false });
  return DOMPurify.sanitize(html, PURIFY);
}

/** Event delegation for the code blocks' copy buttons (no inline handlers: CSP). */
export function installCopyHandler(root = document) {
  root.addEventListener("click", async (ev) => {
    const button = ev.target.closest?.("[data-copy-code]");
    if (!button) return;
    const code = button.closest(".code-block")?.querySelector("code")?.innerText ?? "";
    try {
      await navigator.clipboard.writeText(code);
      button.textContent = "Copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(button.closest(".code-block").querySelector("code"));
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      button.textContent = "Selected";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });
}

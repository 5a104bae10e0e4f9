// Markdown to safe HTML: marked parses, highlight.js colours code, DOMPurify sanitises.
// Nothing from a model or a user reaches the DOM without going through `renderMarkdown`
// (or Preact's text escaping).
import { Marked } from "../vendor/marked.mjs";
import DOMPurify from "../vendor/purify.mjs";
import hljs from "../vendor/hljs-core.mjs";

// Grammars load on first use (a reply with Rust code fetches the Rust grammar), so the first
// paint does not wait for nineteen files; code shows plain until its grammar arrives.
const GRAMMARS = {
  bash: "bash", sh: "bash", zsh: "bash", console: "bash", shell: "shell",
  c: "c", h: "c", cpp: "cpp", "c++": "cpp", cc: "cpp", hpp: "cpp",
  css: "css", diff: "diff", patch: "diff", go: "go", golang: "go",
  ini: "ini", toml: "ini", java: "java",
  javascript: "javascript", js: "javascript", jsx: "javascript", mjs: "javascript",
  json: "json", markdown: "markdown", md: "markdown", plaintext: "plaintext", text: "plaintext", txt: "plaintext",
  python: "python", py: "python", rust: "rust", rs: "rust", sql: "sql",
  typescript: "typescript", ts: "typescript", tsx: "typescript",
  xml: "xml", html: "xml", svg: "xml", yaml: "yaml", yml: "yaml",
};
const loading = new Map();
const listeners = new Set();

function grammarFor(lang) {
  const file = GRAMMARS[lang];
  if (!file) return null;
  if (hljs.getLanguage(lang)) return lang;
  if (!loading.has(file)) {
    loading.set(file, import(`../vendor/hljs/${file}.mjs`).then((mod) => {
      hljs.registerLanguage(file, mod.default);
      hljs.registerAliases(Object.keys(GRAMMARS).filter((k) => GRAMMARS[k] === file && k !== file), { languageName: file });
      for (const fn of listeners) fn();
    }).catch(() => {}));
  }
  return null;
}

/** Call `fn` whenever a grammar has loaded (rendered code can then be coloured). */
export function onGrammarLoaded(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

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
      if (language && grammarFor(language)) {
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

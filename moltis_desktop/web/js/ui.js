// Shared view helpers: the `html` template tag (htm bound to Preact), formatting, toasts.
import { h, render } from "../vendor/preact.mjs";
import htm from "../vendor/htm.mjs";

export const html = htm.bind(h);
export { h, render };

export function toMs(value) {
  if (value == null || value === "") return 0;
  if (typeof value === "number") return value < 1e12 ? value * 1000 : value;
  const t = Date.parse(value);
  return Number.isNaN(t) ? 0 : t;
}

/** A message preview without Markdown's punctuation. */
export function plainText(text) {
  return String(text || "").replace(/```[\s\S]*?```/g, "[code]").replace(/[*_`#>|]+/g, "").replace(/\s+/g, " ").trim();
}

export function timeAgo(value, now = Date.now()) {
  const ms = toMs(value);
  if (!ms) return "";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const hrs = Math.round(m / 60);
  if (hrs < 24) return `${hrs} h ago`;
  const d = Math.round(hrs / 24);
  if (d < 30) return `${d} d ago`;
  return new Date(ms).toLocaleDateString();
}

export function formatTokens(n) {
  if (n == null) return "";
  if (n < 1000) return String(n);
  if (n < 1e6) return `${(n / 1000).toFixed(n < 10000 ? 1 : 0)}k`;
  return `${(n / 1e6).toFixed(1)}M`;
}

export function formatCost(usd) {
  if (usd == null) return "";
  if (usd === 0) return "$0";
  if (usd < 0.01) return `$${usd.toFixed(4)}`;
  return `$${usd.toFixed(2)}`;
}

export function sessionTitle(s) {
  if (!s) return "";
  if (s.label) return s.label;
  if (s.displayName) return s.displayName;
  const key = s.key || "";
  const tail = key.split(":").slice(2).join(":") || key;
  if (tail === "main") return "Main chat";
  const web = /^web-([0-9a-z]+)$/.exec(tail);
  if (web) {
    // A chat started here: its key carries when (base-36 milliseconds).
    const when = new Date(parseInt(web[1], 36));
    if (!Number.isNaN(when.getTime())) {
      return `Chat of ${when.toLocaleDateString(undefined, { month: "short", day: "numeric" })}, ${when.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })}`;
    }
  }
  return tail;
}

const toastListeners = new Set();
export function toast(message, kind = "info") {
  for (const fn of toastListeners) fn({ id: Math.random(), message: String(message), kind });
}
export function onToast(fn) {
  toastListeners.add(fn);
  return () => toastListeners.delete(fn);
}

export function textOf(content) {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content.filter((b) => b && b.type === "text").map((b) => b.text).join("");
}

export function readFileAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

#!/usr/bin/env node
// Render and validate Adaptive Cards the way Teams' web client does: Microsoft's `adaptivecards` JS renderer
// (the same renderer family Teams uses) running under jsdom, with a host config close to Teams' light theme.
//
// stdin:  {"cards": [<card content>, ...], "title": "..."}
// stdout: {"results": [{"ok": bool, "errors": [...], "warnings": [...], "html": "<outer HTML>"}],
//          "page": "<standalone HTML page showing every card>"}
// Exit status: 0 when the input was understood (even if cards are invalid: see `ok`), 2 on bad input.
//
// Used by shared/workbench/preview.py (tests and the offline workbench). No dependencies beyond adaptivecards and jsdom.
"use strict";

const fs = require("fs");
const path = require("path");
const { JSDOM } = require("jsdom");

const TARGET_VERSION = "1.4"; // Workflows' post-card step fails to display 1.5 cards
const MAX_MESSAGE_BYTES = 28000; // Teams drops (after a 202) messages over ~28 KB

// ---------------------------------------------------------------------------------------------------------
// A browser-like global environment. adaptivecards' dist bundle reads `window`/`document` and refers to DOM
// classes (HTMLElement, HTMLButtonElement, ...) as globals, so expose the jsdom window's properties globally
// before loading it. The package's lib/ build is untranspiled ES modules; dist/ is a UMD bundle.
const dom = new JSDOM("<!doctype html><html><head></head><body></body></html>", { url: "https://teams.invalid/" });
const win = dom.window;
// jsdom does not implement innerText, which adaptivecards uses to set all plain text: map it to textContent
// (the browser setter also turns "\n" into <br>; adaptivecards' text never relies on that for our cards).
Object.defineProperty(win.HTMLElement.prototype, "innerText", {
  configurable: true,
  get() {
    return this.textContent;
  },
  set(value) {
    this.textContent = value === null || value === undefined ? "" : String(value);
  },
});
for (const name of Object.getOwnPropertyNames(win)) {
  if (!(name in globalThis)) {
    try {
      globalThis[name] = win[name];
    } catch (_) {
      // read-only or throwing accessors: not needed by the renderer
    }
  }
}
globalThis.window = win;
globalThis.document = win.document;

// Anything the library prints goes into the current card's warnings, never to stdout (which carries JSON).
let consoleSink = null;
for (const level of ["log", "info", "warn", "error", "debug"]) {
  console[level] = (...args) => {
    const text = args.map((a) => (typeof a === "string" ? a : String(a))).join(" ");
    if (consoleSink) consoleSink.push(`renderer ${level}: ${text}`);
    else process.stderr.write(`${text}\n`);
  };
}

const AC = require("adaptivecards/dist/adaptivecards.min.js");

// The library's newest version is 1.6; Teams (Workflows) displays 1.4. With these, a card declaring 1.5 fails
// validation (UnsupportedCardVersion) and a 1.5-only property is reported (UnsupportedProperty).
AC.SerializableObject.defaultMaxVersion = AC.Versions.v1_4;
AC.GlobalSettings.setTabIndexAtCardRoot = false;

// ---------------------------------------------------------------------------------------------------------
// Event classification. Every ValidationEvent is an error except:
//   Hint        - advice (e.g. mixing weighted and stretched columns), the card still renders as intended;
//   Deprecated  - still accepted by Teams today.
// In particular UnknownElementType/UnknownActionType (Teams shows the fallback or nothing),
// InvalidPropertyValue (unknown enum values are silently replaced by defaults), UnsupportedProperty (newer
// than 1.4: ignored by Teams clients), MissingCardType, UnsupportedCardVersion, PropertyCantBeNull,
// CollectionCantBeEmpty, DuplicateId, TooManyActions, Interactivity/ElementType/ActionTypeNotAllowed and
// Other are errors. RequiredInputsShouldHaveLabel/RequiredInputsShouldHaveErrorMessage are errors too:
// kqlwatch's cards have no inputs, so any input at all means the card is not what we meant to send.
const WARNING_EVENTS = new Set([AC.ValidationEvent.Hint, AC.ValidationEvent.Deprecated]);

// Teams' light theme (microsoft/AdaptiveCards samples/HostConfig/microsoft-teams-light.json).
const FOREGROUND = {
  default: { default: "#ff252424", subtle: "#bf252424" },
  dark: { default: "#252424", subtle: "#bf252424" },
  light: { default: "#ffffff", subtle: "#fff3f2f1" },
  accent: { default: "#6264a7", subtle: "#8b8cc7" },
  good: { default: "#92c353", subtle: "#e592c353" },
  warning: { default: "#f8d22a", subtle: "#e5f8d22a" },
  attention: { default: "#c4314b", subtle: "#e5c4314b" },
};
const FONT_SIZES = { small: 12, default: 14, medium: 14, large: 18, extraLarge: 24 };
const FONT_WEIGHTS = { lighter: 200, default: 400, bolder: 600 };
const TEAMS_HOST_CONFIG = {
  choiceSetInputValueSeparator: ",",
  supportsInteractivity: true,
  spacing: { small: 8, default: 12, medium: 16, large: 20, extraLarge: 24, padding: 16 },
  separator: { lineThickness: 1, lineColor: "#EEEEEE" },
  imageSizes: { small: 32, medium: 52, large: 100 },
  fontTypes: {
    default: {
      fontFamily: "'Segoe UI', 'Segoe UI Web (West European)', -apple-system, BlinkMacSystemFont, Roboto, 'Helvetica Neue', sans-serif",
      fontSizes: FONT_SIZES,
      fontWeights: FONT_WEIGHTS,
    },
    monospace: { fontFamily: "Consolas, 'Courier New', Courier, monospace", fontSizes: FONT_SIZES, fontWeights: FONT_WEIGHTS },
  },
  containerStyles: {
    default: { backgroundColor: "#ffffff", foregroundColors: FOREGROUND },
    emphasis: { backgroundColor: "#fff9f8f7", foregroundColors: FOREGROUND },
    accent: { backgroundColor: "#C7DEF9", foregroundColors: FOREGROUND },
    good: { backgroundColor: "#CCFFCC", foregroundColors: FOREGROUND },
    attention: { backgroundColor: "#FFC5B2", foregroundColors: FOREGROUND },
    warning: { backgroundColor: "#FFE2B2", foregroundColors: FOREGROUND },
  },
  actions: {
    maxActions: 6,
    spacing: "Default",
    buttonSpacing: 8,
    showCard: { actionMode: "Inline", inlineTopMargin: 16, style: "emphasis" },
    preExpandSingleShowCardAction: false,
    actionsOrientation: "Horizontal",
    actionAlignment: "Left",
  },
  adaptiveCard: { allowCustomStyle: false },
  imageSet: { imageSize: "Medium", maxImageHeight: 100 },
  factSet: {
    title: { size: "Default", color: "Default", isSubtle: false, weight: "Bolder", wrap: true },
    value: { size: "Default", color: "Default", isSubtle: false, weight: "Default", wrap: true },
    spacing: 16,
  },
};
const hostConfig = new AC.HostConfig(TEAMS_HOST_CONFIG);

// ---------------------------------------------------------------------------------------------------------
// Markdown. Teams renders Markdown in TextBlock (and FactSet) text - never in TextRun - and auto-links URLs.
// adaptivecards leaves Markdown to the host; this is a small, escaping approximation of Teams' behaviour so
// that data placed in a TextBlock shows up as a link in the rendered HTML (which the tests look for).
function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function miniMarkdown(text) {
  const links = [];
  const keep = (html) => `\u0000${links.push(html) - 1}\u0000`;
  let out = String(text)
    .replace(/\u0000/g, "\ufffd") // NUL marks the links kept aside below
    .replace(/\[([^\]\n]*)\]\(([^)\s]+)\)/g, (_, label, url) => keep(`<a href="${escapeHtml(url)}">${escapeHtml(label)}</a>`))
    .replace(/\b(?:https?|ftp):\/\/[^\s<>"']+|\bwww\.[^\s<>"']+/gi, (url) =>
      keep(`<a href="${escapeHtml(/^www\./i.test(url) ? `http://${url}` : url)}">${escapeHtml(url)}</a>`),
    );
  out = escapeHtml(out)
    .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[\s(])_([^_\n]+)_(?=$|[\s).,])/g, "$1<em>$2</em>")
    .replace(/\n/g, "<br>");
  out = out.replace(/\u0000(\d+)\u0000/g, (_, i) => links[Number(i)] ?? "");
  return `<p>${out}</p>`;
}

AC.AdaptiveCard.onProcessMarkdown = (text, result) => {
  result.outputHtml = miniMarkdown(text);
  result.didProcess = true;
};

// ---------------------------------------------------------------------------------------------------------
// Checks adaptivecards does not make (it silently accepts these; Teams shows an empty or broken card, or drops
// the message): the root's type and version, required text/url properties, inline types, link schemes, message
// size. All are errors except an empty (but present) text or url, a warning: it renders nothing.
const SAFE_URL = /^(https?:|mailto:|tel:|msteams:)/i;

function strictChecks(card, errors, warnings) {
  if (card === null || typeof card !== "object" || Array.isArray(card)) {
    errors.push("card content is not a JSON object");
    return;
  }
  if (card.type !== "AdaptiveCard") errors.push(`root type is ${JSON.stringify(card.type ?? null)}, not "AdaptiveCard"`);
  if (card.version === undefined || card.version === null) {
    errors.push(`version is missing (Teams needs "${TARGET_VERSION}" or lower)`);
  } else if (typeof card.version !== "string" || !/^\d+\.\d+$/.test(card.version)) {
    errors.push(`version ${JSON.stringify(card.version)} is not "major.minor"`);
  } else {
    const [major, minor] = card.version.split(".").map(Number);
    if (major > 1 || (major === 1 && minor > 5)) {
      errors.push(`version ${card.version} is newer than ${TARGET_VERSION}, the newest Teams Workflows accept`);
    }
  }
  if (card.body !== undefined && !Array.isArray(card.body)) errors.push("body is not an array");
  if (card.actions !== undefined && !Array.isArray(card.actions)) errors.push("actions is not an array");
  const size = Buffer.byteLength(
    JSON.stringify({
      type: "message",
      attachments: [{ contentType: "application/vnd.microsoft.card.adaptive", contentUrl: null, content: card }],
    }),
    "utf8",
  );
  if (size > MAX_MESSAGE_BYTES) errors.push(`message is ${size} bytes; Teams drops messages over ~${MAX_MESSAGE_BYTES}`);
  walk(card, "$", errors, warnings);
}

function needText(node, key, where, errors, warnings) {
  if (typeof node[key] !== "string") errors.push(`${where}: ${node.type} needs a string "${key}" (got ${JSON.stringify(node[key] ?? null)})`);
  else if (node[key] === "") warnings.push(`${where}: ${node.type} has an empty "${key}" (renders nothing)`);
}

function walk(node, where, errors, warnings) {
  if (Array.isArray(node)) {
    node.forEach((item, i) => walk(item, `${where}[${i}]`, errors, warnings));
    return;
  }
  if (node === null || typeof node !== "object") return;
  switch (node.type) {
    case "TextBlock":
    case "TextRun":
      needText(node, "text", where, errors, warnings);
      break;
    case "Image":
      needText(node, "url", where, errors, warnings);
      break;
    case "Fact":
    case undefined:
      break;
    case "RichTextBlock":
      if (!Array.isArray(node.inlines)) errors.push(`${where}: RichTextBlock needs an "inlines" array`);
      else node.inlines.forEach((inline, i) => {
        if (typeof inline !== "string" && (inline === null || typeof inline !== "object" || inline.type !== "TextRun")) {
          errors.push(`${where}.inlines[${i}]: only TextRun (or a string) may be an inline, not ${JSON.stringify(inline?.type ?? inline)}`);
        }
      });
      break;
    case "Action.OpenUrl":
      if (typeof node.url === "string" && !SAFE_URL.test(node.url.trim())) {
        errors.push(`${where}: Action.OpenUrl url ${JSON.stringify(node.url.slice(0, 80))} is not an http(s), mailto, tel or msteams URL`);
      }
      break;
    default:
      break;
  }
  if (node.type === "FactSet" && Array.isArray(node.facts)) {
    node.facts.forEach((fact, i) => {
      if (fact === null || typeof fact !== "object" || typeof fact.title !== "string" || typeof fact.value !== "string") {
        errors.push(`${where}.facts[${i}]: a Fact needs string "title" and "value"`);
      }
    });
  }
  for (const [key, value] of Object.entries(node)) {
    if (value !== null && typeof value === "object") walk(value, `${where}.${key}`, errors, warnings);
  }
}

// ---------------------------------------------------------------------------------------------------------
function describe(event) {
  const name = AC.ValidationEvent[event.event] ?? String(event.event);
  const phase = AC.ValidationPhase[event.phase] ?? String(event.phase);
  const source = event.source && typeof event.source.getJsonTypeName === "function" ? ` [${event.source.getJsonTypeName()}]` : "";
  return `${name} (${phase})${source}: ${event.message}`;
}

function renderOne(json) {
  const errors = [];
  const warnings = [];
  let html = "";
  consoleSink = warnings;
  try {
    strictChecks(json, errors, warnings);
    const card = new AC.AdaptiveCard();
    card.hostConfig = hostConfig;
    const context = new AC.SerializationContext(AC.Versions.v1_4);
    try {
      card.parse(json, context);
    } catch (exc) {
      errors.push(`parse failed: ${exc && exc.message ? exc.message : exc}`);
    }
    const events = [];
    for (let i = 0; i < context.eventCount; i++) events.push(context.getEventAt(i));
    const validation = card.validateProperties();
    events.push(...validation.validationEvents);
    for (const event of events) (WARNING_EVENTS.has(event.event) ? warnings : errors).push(describe(event));
    try {
      const element = card.render();
      if (element) html = element.outerHTML;
      else errors.push("render produced nothing");
    } catch (exc) {
      errors.push(`render failed: ${exc && exc.message ? exc.message : exc}`);
    }
  } catch (exc) {
    errors.push(`renderer crashed: ${exc && exc.stack ? exc.stack : exc}`);
  } finally {
    consoleSink = null;
  }
  return { ok: errors.length === 0, errors, warnings, html };
}

// ---------------------------------------------------------------------------------------------------------
const PAGE_CSS = `
body { margin: 0; background: #f5f5f5; color: #242424; font-family: 'Segoe UI', -apple-system, BlinkMacSystemFont, Roboto, 'Helvetica Neue', sans-serif; }
header { background: #464775; color: #fff; padding: 12px 24px; }
header h1 { margin: 0; font-size: 18px; font-weight: 600; }
header p { margin: 4px 0 0; font-size: 12px; opacity: .85; }
main { padding: 16px 24px; }
section.kw-card { margin: 0 0 24px; }
section.kw-card h2 { font-size: 13px; font-weight: 600; margin: 0 0 6px; color: #616161; }
.kw-status-ok { color: #237b4b; } .kw-status-bad { color: #c4314b; }
ul.kw-problems { margin: 0 0 8px; padding-left: 20px; font-size: 12px; }
ul.kw-problems li.kw-error { color: #c4314b; } ul.kw-problems li.kw-warning { color: #835b00; }
.kw-bubble { background: #fff; border-radius: 4px; box-shadow: 0 1px 2px rgba(0,0,0,.14), 0 0 2px rgba(0,0,0,.12); overflow: hidden; max-width: 520px; }
.kw-bubble.kw-full { max-width: none; }
`;

function page(title, cards, results) {
  const acCss = readPackageCss();
  const okCount = results.filter((r) => r.ok).length;
  const sections = results.map((result, i) => {
    const card = cards[i];
    const full = card && typeof card === "object" && card.msteams && card.msteams.width === "Full";
    const problems = [
      ...result.errors.map((e) => `<li class="kw-error">${escapeHtml(e)}</li>`),
      ...result.warnings.map((w) => `<li class="kw-warning">${escapeHtml(w)}</li>`),
    ];
    return [
      `<section class="kw-card" id="card-${i + 1}">`,
      `<h2>Card ${i + 1} of ${results.length} · <span class="${result.ok ? "kw-status-ok" : "kw-status-bad"}">${result.ok ? "valid" : `${result.errors.length} error(s)`}</span></h2>`,
      problems.length ? `<ul class="kw-problems">${problems.join("")}</ul>` : "",
      `<div class="kw-bubble${full ? " kw-full" : ""}">${result.html}</div>`,
      `</section>`,
    ].join("\n");
  });
  return [
    "<!doctype html>",
    '<html lang="en"><head><meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src https: data:">`,
    `<title>${escapeHtml(title)}</title>`,
    `<style>${acCss}\n${PAGE_CSS}</style>`,
    "</head><body>",
    `<header><h1>${escapeHtml(title)}</h1><p>${results.length} card(s), ${okCount} valid · rendered with adaptivecards ${escapeHtml(packageVersion())} (Adaptive Cards ${TARGET_VERSION}, Teams light host config)</p></header>`,
    "<main>",
    ...sections,
    "</main></body></html>",
  ].join("\n");
}

function readPackageCss() {
  try {
    return fs.readFileSync(path.join(path.dirname(require.resolve("adaptivecards/package.json")), "dist", "adaptivecards.css"), "utf8");
  } catch (_) {
    return "";
  }
}

function packageVersion() {
  try {
    return require("adaptivecards/package.json").version;
  } catch (_) {
    return "?";
  }
}

function main() {
  let input;
  try {
    input = JSON.parse(fs.readFileSync(0, "utf8"));
  } catch (exc) {
    process.stderr.write(`render-cards: stdin is not JSON: ${exc.message}\n`);
    process.exit(2);
  }
  if (!input || !Array.isArray(input.cards)) {
    process.stderr.write('render-cards: expected {"cards": [...], "title": "..."} on stdin\n');
    process.exit(2);
  }
  const title = typeof input.title === "string" ? input.title : "Adaptive Cards";
  const results = input.cards.map(renderOne);
  const output = JSON.stringify({ results, page: page(title, input.cards, results) });
  process.stdout.write(output, () => process.exit(0));
}

main();

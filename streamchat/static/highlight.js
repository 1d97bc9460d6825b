/**
 * Syntax highlighting for code blocks and artifacts: highlight.js core with the languages
 * models write most, each a vendored ES module (the list matches HIGHLIGHT_LANGUAGES in the
 * Makefile's `vendor` target). Unknown languages stay plain text; nothing is guessed.
 */
import hljs from './vendor/highlight/core.min.js';
import bash from './vendor/highlight/languages/bash.min.js';
import c from './vendor/highlight/languages/c.min.js';
import cpp from './vendor/highlight/languages/cpp.min.js';
import csharp from './vendor/highlight/languages/csharp.min.js';
import css from './vendor/highlight/languages/css.min.js';
import diff from './vendor/highlight/languages/diff.min.js';
import dockerfile from './vendor/highlight/languages/dockerfile.min.js';
import go from './vendor/highlight/languages/go.min.js';
import ini from './vendor/highlight/languages/ini.min.js';
import java from './vendor/highlight/languages/java.min.js';
import javascript from './vendor/highlight/languages/javascript.min.js';
import json from './vendor/highlight/languages/json.min.js';
import markdown from './vendor/highlight/languages/markdown.min.js';
import plaintext from './vendor/highlight/languages/plaintext.min.js';
import python from './vendor/highlight/languages/python.min.js';
import rust from './vendor/highlight/languages/rust.min.js';
import shell from './vendor/highlight/languages/shell.min.js';
import sql from './vendor/highlight/languages/sql.min.js';
import typescript from './vendor/highlight/languages/typescript.min.js';
import xml from './vendor/highlight/languages/xml.min.js';
import yaml from './vendor/highlight/languages/yaml.min.js';

const LANGUAGES = {
  bash, c, cpp, csharp, css, diff, dockerfile, go, ini, java, javascript, json, markdown,
  plaintext, python, rust, shell, sql, typescript, xml, yaml,
};
for (const [name, language] of Object.entries(LANGUAGES)) hljs.registerLanguage(name, language);

/** The registered name for a fence's or artifact's language ("py" -> "python"), or ''. */
export function languageName(language) {
  const found = language ? hljs.getLanguage(language.toLowerCase()) : null;
  if (!found) return '';
  return Object.keys(LANGUAGES).find((name) => hljs.getLanguage(name) === found) ?? '';
}

/**
 * `code` as highlight.js HTML (its text escaped, wrapped in `<span class="hljs-...">`), or null
 * when the language is unknown.
 */
export function highlightHtml(code, language) {
  const name = languageName(language);
  if (!name || name === 'plaintext') return null;
  return hljs.highlight(code, { language: name, ignoreIllegals: true }).value;
}

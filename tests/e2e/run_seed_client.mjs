// Runs the seed document's frontend snippet, unchanged, against a live server.
// Usage: node run_seed_client.mjs BASE_URL QUESTION
// The snippet uses a relative URL as a browser page would; Node resolves it against BASE_URL.
import { readFileSync } from "node:fs";

const [base, question] = process.argv.slice(2);
const realFetch = globalThis.fetch;
globalThis.fetch = (url, options) => realFetch(new URL(url, base), options);

const log = [];
globalThis.updateUI = (text, append) => log.push(append ? { chunk: text } : { status: text });
globalThis.showError = (text) => log.push({ error: text });
globalThis.showSuggestedQuestions = (questions) => log.push({ suggested: questions });
globalThis.console.error = (...args) => log.push({ consoleError: args.map(String).join(" ") });

const snippet = readFileSync(new URL("./seed_client.js", import.meta.url), "utf8");
const streamChatResponse = new Function(`${snippet}\nreturn streamChatResponse;`)();
await streamChatResponse(question);
process.stdout.write(JSON.stringify(log));

// Serves the Remix webhook route of docs/forwarding.md (app/routes/webhooks.tsx, with the
// app/shopify.server.ts beside it, both taken from the docs by the test) as Remix would: each
// POST becomes a Fetch API Request handed to the route's `action`, and the Response it returns
// (or throws, as authenticate.webhook does on a bad HMAC) is the answer. TypeScript is loaded
// through tsx (installed into .tools/node by scripts/install-tools.sh).
//   node server.mjs <app root> <record file> <slow topic> <slow seconds>
// The first delivery of each webhook of <slow topic> is answered <slow seconds> late, after the
// route handled it: the answer a worker times out on, so it delivers the webhook again.
// Listens on a free loopback port and prints it as the first line of stdout.
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";

const [root, recordFile, slowTopic, slowSeconds] = process.argv.slice(2);
// The libraries log to the console: to stderr, so that stdout's first line is the port.
console.log = console.info = console.warn = console.debug = console.error;
const require = createRequire(join(root, "noop.js"));
// The ES module build of tsx's API (a require() resolution would name its CommonJS one).
const tsx = dirname(require.resolve("tsx/package.json"));
const { tsImport } = await import(pathToFileURL(join(tsx, "dist", "esm", "api", "index.mjs")).href);
const route = pathToFileURL(join(root, "app", "routes", "webhooks.tsx")).href;
const { action } = await tsImport(route, import.meta.url);
const slowed = new Set();

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    const headers = new Headers();
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
    }
    const request = new Request(`http://127.0.0.1${req.url}`, {
      method: req.method,
      headers,
      body: Buffer.concat(chunks),
    });
    let response;
    try {
      response = await action({ request, params: {}, context: {} });
    } catch (thrown) {
      response = thrown instanceof Response ? thrown : new Response(`${thrown}`, { status: 500 });
    }
    const webhookId = headers.get("x-shopify-webhook-id");
    appendFileSync(
      recordFile,
      JSON.stringify({
        kind: "request",
        status: response.status,
        webhookId,
        topic: headers.get("x-shopify-topic"),
        attempt: headers.get("x-shopipe-attempt"),
      }) + "\n",
    );
    if (headers.get("x-shopify-topic") === slowTopic && !slowed.has(webhookId)) {
      slowed.add(webhookId);
      await new Promise((done) => setTimeout(done, Number(slowSeconds) * 1000));
    }
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  });
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${server.address().port}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));

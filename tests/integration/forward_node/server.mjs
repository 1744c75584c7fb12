// A Shopify app's webhook endpoint, as a Remix/Node app built on @shopify/shopify-api has it
// (installed into .tools/node by scripts/install-tools.sh): every request is checked with
// shopify.webhooks.validate(), and what it saw is appended to a JSON-lines file.
//   node server.mjs <node_modules dir> <app secret> <record file>
// Listens on a free loopback port and prints it as the first line of stdout.
import { createHash } from "node:crypto";
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { createRequire } from "node:module";

const [modules, secret, recordFile] = process.argv.slice(2);
const require = createRequire(join(modules, "noop.js"));
require("@shopify/shopify-api/adapters/node");
const { shopifyApi, ApiVersion, LogSeverity } = require("@shopify/shopify-api");

const shopify = shopifyApi({
  apiKey: "shopipe-test",
  apiSecretKey: secret,
  scopes: ["read_orders"],
  hostName: "127.0.0.1",
  hostScheme: "http",
  apiVersion: ApiVersion.January25,
  isEmbeddedApp: false,
  logger: { level: LogSeverity.Error, log: async () => {} },
});

const server = createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    const body = Buffer.concat(chunks);
    let check;
    try {
      // As a Remix app's webhook route does: the raw body, as text.
      check = await shopify.webhooks.validate({
        rawBody: body.toString("utf8"),
        rawRequest: req,
        rawResponse: res,
      });
    } catch (e) {
      check = { valid: false, reason: `threw: ${e}` };
    }
    appendFileSync(
      recordFile,
      JSON.stringify({
        valid: check.valid,
        reason: check.reason ?? null,
        topic: check.topic ?? null,
        webhookId: check.webhookId ?? null,
        domain: check.domain ?? null,
        sha256: createHash("sha256").update(body).digest("hex"),
        recordId: req.headers["x-shopipe-record-id"] ?? null,
        attempt: req.headers["x-shopipe-attempt"] ?? null,
        receivedAt: req.headers["x-shopipe-received-at"] ?? null,
      }) + "\n",
    );
    res.writeHead(check.valid ? 200 : 401, { "content-type": "text/plain" });
    res.end(check.valid ? "ok" : "invalid");
  });
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${server.address().port}\n`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));

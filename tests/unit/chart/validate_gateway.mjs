// Validates Gateway API objects against the CRD schemas of @kubernetes-models/gateway-api
// (installed into .tools/node by scripts/install-tools.sh).
//   node validate_gateway.mjs <node_modules dir> < objects.json
// stdin: a JSON list of objects; stdout: a JSON list of {name, error} (error null when valid).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const KINDS = { HTTPRoute: "HTTPRoute", Gateway: "Gateway", GRPCRoute: "GRPCRoute" };

async function model(apiVersion, kind) {
  const [group, version] = apiVersion.split("/");
  if (!KINDS[kind] || !version) throw new Error(`no model for ${apiVersion} ${kind}`);
  const file = join(modules, "@kubernetes-models/gateway-api", group, version, `${kind}.js`);
  return (await import(pathToFileURL(file).href))[kind];
}

const out = [];
for (const obj of JSON.parse(readFileSync(0, "utf8"))) {
  const name = `${obj.kind}/${obj.metadata?.name}`;
  try {
    const Model = await model(obj.apiVersion, obj.kind);
    new Model(obj).validate();
    out.push({ name, error: null });
  } catch (e) {
    out.push({ name, error: String(e.message ?? e) });
  }
}
process.stdout.write(JSON.stringify(out));

// app/handle.server.ts for the test: the app's own work on a webhook, recorded as a JSON line
// in the file named by SHOPIPE_TEST_RECORD.
import { appendFileSync } from "node:fs";

type Webhook = { topic: string; shop: string; webhookId: string; payload: unknown };

export async function handle(webhook: Webhook): Promise<void> {
  const line = JSON.stringify({ kind: "handled", ...webhook });
  appendFileSync(process.env.SHOPIPE_TEST_RECORD ?? "", line + "\n");
}

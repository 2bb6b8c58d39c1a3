// Runs a plan of MCP calls with the official TypeScript client and prints what came back as JSON.
// Usage: node client.mjs '<plan JSON>' where the plan is
//   {"url": "...", "token": "...", "calls": [{"tool": "...", "arguments": {...}}], "resources": ["uri", ...]}
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const plan = JSON.parse(process.argv[2]);
const transport = new StreamableHTTPClientTransport(new URL(plan.url), {
  requestInit: { headers: { Authorization: `Bearer ${plan.token}` } },
});
const client = new Client({ name: "millimetric-node-test", version: "0.0.0" });

function failure(error) {
  return { error: { code: error.code ?? null, message: String(error.message), data: error.data ?? null } };
}

const out = {};
try {
  await client.connect(transport);
} catch (error) {
  console.log(JSON.stringify({ connect: failure(error) }));
  process.exit(0);
}
out.serverInfo = client.getServerVersion();
out.tools = (await client.listTools()).tools.map((tool) => tool.name);
out.calls = [];
for (const call of plan.calls ?? []) {
  try {
    const result = await client.callTool({ name: call.tool, arguments: call.arguments });
    out.calls.push({ text: result.content[0].text, structuredContent: result.structuredContent, isError: !!result.isError });
  } catch (error) {
    out.calls.push(failure(error));
  }
}
out.resources = {};
for (const uri of plan.resources ?? []) {
  out.resources[uri] = JSON.parse((await client.readResource({ uri })).contents[0].text);
}
await client.close();
console.log(JSON.stringify(out));

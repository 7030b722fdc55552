#!/usr/bin/env node
// Standard MCP sessions with the TypeScript MCP SDK, as tests/test_mcp_workers.py runs them.
//
//   node sessions.mjs <url> <count> <sequential|concurrent> [--header "Name: Value"]...
//
// Each session: connect (initialize), listTools, echo twice (structuredContent.metadata.step must be 1,
// then 2: one environment per MCP session), then DELETE (transport.terminateSession(): client.close()
// alone sends none). Prints one JSON line: {"ok", "failed", "failures": [{"session", "stage", "status",
// "message"}], "seconds"}; exits 0 when every session is ok, 1 otherwise. An error the transport reports
// on its own (the SDK's onerror: its GET stream refused, say) before the session's end fails the session
// too (stage "transport"); the abort of that stream by client.close() does not.
//
// The SDK is the one ci-install.sh installs from package-lock.json, outside the project (see there):
// $ROOMS_MCP_CLIENTS_DIR/clients, by default ~/.cache/rooms-tests/mcp-clients/clients.
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { join } from "node:path";

const clients = process.env.ROOMS_MCP_CLIENTS_DIR || join(homedir(), ".cache", "rooms-tests", "mcp-clients");
const installed = join(clients, "clients", "package.json");
const require = createRequire(installed);
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = require("@modelcontextprotocol/sdk/client/streamableHttp.js");

const MESSAGE_LIMIT = 300; // characters of an error message kept in the summary

function usage(problem) {
  process.stderr.write(`${problem}\nusage: node sessions.mjs <url> <count> <sequential|concurrent> [--header "Name: Value"]...\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const [url, count, mode, ...rest] = argv;
  if (!url || !count || !["sequential", "concurrent"].includes(mode)) usage("missing or bad arguments");
  const headers = {};
  for (let i = 0; i < rest.length; i += 2) {
    if (rest[i] !== "--header" || rest[i + 1] === undefined) usage(`unexpected argument ${rest[i]}`);
    const separator = rest[i + 1].indexOf(":");
    if (separator < 1) usage(`a header is "Name: Value", not ${rest[i + 1]}`);
    headers[rest[i + 1].slice(0, separator).trim()] = rest[i + 1].slice(separator + 1).trim();
  }
  return { url: new URL(url), count: Number.parseInt(count, 10), mode, headers };
}

class StageError extends Error {
  constructor(stage, cause) {
    super(cause instanceof Error ? cause.message : String(cause));
    this.stage = stage;
    this.status = cause?.code ?? null; // StreamableHTTPError's HTTP status, McpError's JSON-RPC code
  }
}

async function stage(name, action) {
  try {
    return await action();
  } catch (error) {
    throw new StageError(name, error);
  }
}

async function echo(client, message, step) {
  const result = await client.callTool({ name: "echo", arguments: { message } });
  if (result.isError) throw new Error(`echo failed: ${JSON.stringify(result.content)}`);
  const seen = result.structuredContent?.metadata?.step;
  if (seen !== step) throw new Error(`echo answered step ${seen}, expected ${step}`);
}

async function oneSession(options) {
  const transport = new StreamableHTTPClientTransport(options.url, { requestInit: { headers: options.headers } });
  const client = new Client({ name: "rooms-ts-sessions", version: "1.0.0" });
  const transportErrors = [];
  let closing = false;
  client.onerror = (error) => {
    if (!closing) transportErrors.push(error);
  };
  try {
    await stage("connect", () => client.connect(transport));
    await stage("listTools", async () => {
      const names = (await client.listTools()).tools.map((tool) => tool.name);
      if (!names.includes("echo")) throw new Error(`no echo tool in ${JSON.stringify(names)}`);
    });
    await stage("echo1", () => echo(client, "hello", 1));
    await stage("echo2", () => echo(client, "hello rooms", 2));
    await stage("terminate", async () => {
      if (transport.sessionId === undefined) throw new Error("the server gave no Mcp-Session-Id");
      await transport.terminateSession();
    });
    if (transportErrors.length > 0) throw new StageError("transport", transportErrors[0]);
  } finally {
    closing = true;
    if (transport.sessionId !== undefined) await transport.terminateSession().catch(() => {}); // after a failure
    await client.close().catch(() => {});
  }
}

async function run(options) {
  const started = performance.now();
  const failures = [];
  const attempt = (index) =>
    oneSession(options).catch((error) =>
      failures.push({
        session: index,
        stage: error.stage ?? "unknown",
        status: error.status ?? null,
        message: String(error.message).slice(0, MESSAGE_LIMIT),
      }),
    );
  const indexes = [...Array(options.count).keys()];
  if (options.mode === "concurrent") {
    await Promise.all(indexes.map(attempt));
  } else {
    for (const index of indexes) await attempt(index);
  }
  failures.sort((a, b) => a.session - b.session);
  return {
    ok: options.count - failures.length,
    failed: failures.length,
    failures,
    seconds: Math.round(performance.now() - started) / 1000,
  };
}

const summary = await run(parseArgs(process.argv.slice(2)));
process.stdout.write(`${JSON.stringify(summary)}\n`);
process.exit(summary.failed === 0 ? 0 : 1);

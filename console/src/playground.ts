// The playground's request: built from the form, streamed from /v1/chat/completions, and written out as the
// equivalent curl and openai-SDK code (with a placeholder for the key: the page never has one).
import { csrfHeaders, errorOf } from "./api";

export interface Message { role: "user" | "assistant" | "system"; content: string }

export interface PlaygroundForm {
  model: string;
  system: string;
  messages: Message[];
  thinking: boolean;
  budget: string;
  temperature: string;
  top_p: string;
  top_k: string;
  max_tokens: string;
  jsonMode: boolean;
  schema: string;
  toolOn: boolean;
  tool: string;
}

export interface ToolCall { id: string; name: string; arguments: string }

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost?: number;
  prompt_tokens_details?: { cached_tokens?: number };
  completion_tokens_details?: { reasoning_tokens?: number };
}

export interface StreamState {
  id: string | null;
  reasoning: string;
  content: string;
  toolCalls: ToolCall[];
  finish: string | null;
  usage: Usage | null;
  currency: string | null;
}

const num = (s: string) => (s.trim() === "" ? undefined : Number(s));

/** The chat request for the form, or an Error naming the field whose JSON does not parse. */
export function requestBody(f: PlaygroundForm): Record<string, unknown> {
  const messages = [
    ...(f.system.trim() ? [{ role: "system", content: f.system }] : []),
    ...f.messages.filter((m) => m.content.trim() !== ""),
  ];
  const body: Record<string, unknown> = { model: f.model, messages, stream: true, stream_options: { include_usage: true } };
  // Thinking off through OpenRouter's reasoning object (the chat template's enable_thinking=false underneath).
  if (!f.thinking) body.reasoning = { enabled: false };
  else if (num(f.budget) !== undefined) body.reasoning = { max_tokens: num(f.budget) };
  for (const k of ["temperature", "top_p", "top_k", "max_tokens"] as const) {
    const v = num(f[k]);
    if (v !== undefined) body[k] = v;
  }
  if (f.jsonMode) {
    let schema: unknown;
    try { schema = JSON.parse(f.schema); } catch { throw new Error("The JSON schema is not valid JSON."); }
    body.response_format = { type: "json_schema", json_schema: { name: "output", schema, strict: true } };
  }
  if (f.toolOn) {
    let tool: unknown;
    try { tool = JSON.parse(f.tool); } catch { throw new Error("The tool definition is not valid JSON."); }
    body.tools = [tool];
    body.tool_choice = "auto";
  }
  return body;
}

function apply(state: StreamState, chunk: any): void {
  if (chunk.id) state.id = chunk.id;
  if (chunk.usage) state.usage = chunk.usage;
  for (const choice of chunk.choices ?? []) {
    const d = choice.delta ?? {};
    state.reasoning += d.reasoning ?? "";
    state.content += d.content ?? "";
    for (const tc of d.tool_calls ?? []) {
      const slot = (state.toolCalls[tc.index] ??= { id: "", name: "", arguments: "" });
      if (tc.id) slot.id = tc.id;
      slot.name += tc.function?.name ?? "";
      slot.arguments += tc.function?.arguments ?? "";
    }
    if (choice.finish_reason) state.finish = choice.finish_reason;
  }
}

/** POST the request and call ``onUpdate`` with the whole answer so far after every event. */
export async function stream(body: Record<string, unknown>, signal: AbortSignal,
                             onUpdate: (s: StreamState) => void): Promise<StreamState> {
  const response = await fetch("/v1/chat/completions", {
    method: "POST", signal, credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...csrfHeaders() },
    body: JSON.stringify(body),
  });
  if (!response.ok || !response.body) throw await errorOf(response);
  const state: StreamState = { id: null, reasoning: "", content: "", toolCalls: [], finish: null, usage: null,
    currency: response.headers.get("X-Cost-Currency") };
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue; // ":" keep-alive comments
        const data = line.slice(6);
        if (data === "[DONE]") return state;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message ?? "The stream ended with an error.");
        apply(state, chunk);
        onUpdate({ ...state, toolCalls: state.toolCalls.map((t) => ({ ...t })) });
      }
    }
  }
  return state;
}

export function curlSnippet(body: Record<string, unknown>): string {
  const json = JSON.stringify(body, null, 2).replace(/'/g, "'\\''");
  return `curl ${window.location.origin}/v1/chat/completions \\
  -H "Authorization: Bearer $QWEN3_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '${json}'`;
}

function py(value: unknown, indent = 0): string {
  // JSON is Python but for true / false / null.
  return JSON.stringify(value, null, 4)
    .replace(/\btrue\b/g, "True").replace(/\bfalse\b/g, "False").replace(/\bnull\b/g, "None")
    .split("\n").join(`\n${" ".repeat(indent)}`);
}

export function pythonSnippet(body: Record<string, unknown>): string {
  const { model, messages, stream: _s, stream_options: _o, ...rest } = body;
  const standard = ["temperature", "top_p", "max_tokens", "response_format", "tools", "tool_choice"];
  const args = Object.entries(rest).filter(([k]) => standard.includes(k));
  const extra = Object.fromEntries(Object.entries(rest).filter(([k]) => !standard.includes(k)));
  const lines = [
    "import os",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${window.location.origin}/v1", api_key=os.environ["QWEN3_API_KEY"])`,
    "stream = client.chat.completions.create(",
    `    model=${py(model)},`,
    `    messages=${py(messages, 4)},`,
    ...args.map(([k, v]) => `    ${k}=${py(v, 4)},`),
    ...(Object.keys(extra).length ? [`    extra_body=${py(extra, 4)},  # qwen3-api / OpenRouter fields`] : []),
    "    stream=True,",
    '    stream_options={"include_usage": True},',
    ")",
    "for chunk in stream:",
    "    if chunk.choices:",
    "        delta = chunk.choices[0].delta",
    '        print(getattr(delta, "reasoning", None) or "", delta.content or "", sep="", end="", flush=True)',
    "    elif chunk.usage:",
    "        print(\"\\n\", chunk.usage)",
  ];
  return lines.join("\n");
}

import { useRef, useState, type FormEvent } from "react";
import { get, type ModelCard } from "../api";
import { Dialog } from "../components/Dialog";
import { ErrorNote, Panel, Stat } from "../components/Stat";
import { int, money } from "../format";
import { useLoad } from "../hooks";
import {
  curlSnippet, pythonSnippet, requestBody, stream, type Message, type PlaygroundForm, type StreamState,
} from "../playground";

const SCHEMA = `{
  "type": "object",
  "properties": {"answer": {"type": "string"}},
  "required": ["answer"]
}`;
const TOOL = `{
  "type": "function",
  "function": {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
  }
}`;

function Output({ out, running }: { out: StreamState; running: boolean }) {
  const u = out.usage;
  return (
    <div className="output" aria-busy={running}>
      {out.reasoning && (
        <details className="reasoning" open data-testid="reasoning">
          <summary>Reasoning</summary>
          <div className="pre">{out.reasoning}</div>
        </details>
      )}
      <h3 className="sr-only">Answer</h3>
      <div className="pre answer" data-testid="answer">{out.content || (running ? "…" : "")}</div>
      {out.toolCalls.length > 0 && (
        <div data-testid="tool-calls">
          <h3>Tool calls</h3>
          {out.toolCalls.map((t, i) => (
            <div key={t.id || i} className="tool-call"><code>{t.name}</code><pre>{pretty(t.arguments)}</pre></div>
          ))}
        </div>
      )}
      {u && (
        <dl className="stats usage" data-testid="usage">
          <Stat label="Prompt" value={int(u.prompt_tokens)} hint={u.prompt_tokens_details?.cached_tokens ? `(${int(u.prompt_tokens_details.cached_tokens)} cached)` : undefined} />
          <Stat label="Completion" value={int(u.completion_tokens)} />
          <Stat label="Reasoning" value={int(u.completion_tokens_details?.reasoning_tokens ?? 0)} />
          <Stat label="Cost" value={u.cost === undefined ? "—" : money(String(u.cost), out.currency ?? "")} />
          <Stat label="Finish" value={out.finish ?? "—"} />
        </dl>
      )}
    </div>
  );
}

function pretty(json: string): string {
  try { return JSON.stringify(JSON.parse(json), null, 2); } catch { return json; }
}

export function Playground() {
  const models = useLoad(() => get<{ data: ModelCard[] }>("/v1/models").then((r) => r.data), "models");
  const [form, setForm] = useState<PlaygroundForm>({
    model: "", system: "", messages: [{ role: "user", content: "" }], thinking: true, budget: "", temperature: "",
    top_p: "", top_k: "", max_tokens: "256", jsonMode: false, schema: SCHEMA, toolOn: false, tool: TOOL,
  });
  const [out, setOut] = useState<StreamState | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [running, setRunning] = useState(false);
  const [code, setCode] = useState<Record<string, unknown> | null>(null);
  const abort = useRef<AbortController | null>(null);
  const model = form.model || models.data?.[0]?.id || "";
  const set = <K extends keyof PlaygroundForm>(k: K, v: PlaygroundForm[K]) => setForm((f) => ({ ...f, [k]: v }));
  const setMessage = (i: number, m: Partial<Message>) =>
    set("messages", form.messages.map((old, j) => (j === i ? { ...old, ...m } : old)));

  function body(): Record<string, unknown> | null {
    try {
      return requestBody({ ...form, model });
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      return null;
    }
  }

  async function run(event: FormEvent) {
    event.preventDefault();
    setError(null);
    const b = body();
    if (!b) return;
    abort.current = new AbortController();
    setRunning(true);
    setOut({ id: null, reasoning: "", content: "", toolCalls: [], finish: null, usage: null, currency: null });
    try {
      await stream(b, abort.current.signal, setOut);
    } catch (e) {
      if (!(e instanceof DOMException && e.name === "AbortError")) setError(e instanceof Error ? e.message : String(e));
    } finally {
      setRunning(false);
    }
  }

  function keep() {
    if (!out) return;
    set("messages", [...form.messages, { role: "assistant", content: out.content }, { role: "user", content: "" }]);
    setOut(null);
  }

  return (
    <>
      <div className="page-head">
        <h1>Playground</h1>
        <button type="button" className="secondary" onClick={() => { const b = body(); if (b) setCode(b); }}>View code</button>
      </div>
      <div className="grid playground">
        <form className="card" onSubmit={run} aria-label="Request">
          <label htmlFor="pg-model">Model</label>
          <select id="pg-model" value={model} onChange={(e) => set("model", e.target.value)}>
            {(models.data ?? []).map((m) => <option key={m.id} value={m.id}>{m.id}</option>)}
          </select>
          <label htmlFor="pg-system">System prompt</label>
          <textarea id="pg-system" rows={2} value={form.system} onChange={(e) => set("system", e.target.value)} />
          <fieldset>
            <legend>Messages</legend>
            {form.messages.map((m, i) => (
              <div key={i} className="message">
                <label htmlFor={`pg-role-${i}`} className="sr-only">Role of message {i + 1}</label>
                <select id={`pg-role-${i}`} value={m.role} onChange={(e) => setMessage(i, { role: e.target.value as Message["role"] })}>
                  <option value="user">user</option><option value="assistant">assistant</option>
                </select>
                <label htmlFor={`pg-msg-${i}`} className="sr-only">Message {i + 1}</label>
                <textarea id={`pg-msg-${i}`} rows={3} value={m.content} placeholder="Say something…"
                          onChange={(e) => setMessage(i, { content: e.target.value })} />
                {form.messages.length > 1 && (
                  <button type="button" className="icon" aria-label={`Remove message ${i + 1}`}
                          onClick={() => set("messages", form.messages.filter((_, j) => j !== i))}>×</button>
                )}
              </div>
            ))}
            <button type="button" className="secondary" onClick={() => set("messages", [...form.messages, { role: "user", content: "" }])}>
              Add message</button>
          </fieldset>
          <fieldset className="params">
            <legend>Parameters</legend>
            <label className="check"><input type="checkbox" checked={form.thinking} onChange={(e) => set("thinking", e.target.checked)} /> Thinking</label>
            <div><label htmlFor="pg-budget">Thinking budget</label>
              <input id="pg-budget" type="number" min={1} placeholder="none" disabled={!form.thinking} value={form.budget}
                     onChange={(e) => set("budget", e.target.value)} /></div>
            <div><label htmlFor="pg-temperature">Temperature</label>
              <input id="pg-temperature" type="number" min={0} max={2} step={0.1} placeholder="default" value={form.temperature}
                     onChange={(e) => set("temperature", e.target.value)} /></div>
            <div><label htmlFor="pg-top-p">top_p</label>
              <input id="pg-top-p" type="number" min={0} max={1} step={0.05} placeholder="default" value={form.top_p}
                     onChange={(e) => set("top_p", e.target.value)} /></div>
            <div><label htmlFor="pg-top-k">top_k</label>
              <input id="pg-top-k" type="number" min={-1} step={1} placeholder="default" value={form.top_k}
                     onChange={(e) => set("top_k", e.target.value)} /></div>
            <div><label htmlFor="pg-max-tokens">max_tokens</label>
              <input id="pg-max-tokens" type="number" min={1} placeholder="default" value={form.max_tokens}
                     onChange={(e) => set("max_tokens", e.target.value)} /></div>
          </fieldset>
          <fieldset>
            <legend>Structured output and tools</legend>
            <label className="check"><input type="checkbox" checked={form.jsonMode} onChange={(e) => set("jsonMode", e.target.checked)} /> JSON-schema output</label>
            {form.jsonMode && (<><label htmlFor="pg-schema">JSON schema</label>
              <textarea id="pg-schema" rows={5} className="mono" value={form.schema} onChange={(e) => set("schema", e.target.value)} /></>)}
            <label className="check"><input type="checkbox" checked={form.toolOn} onChange={(e) => set("toolOn", e.target.checked)} /> Offer a tool</label>
            {form.toolOn && (<><label htmlFor="pg-tool">Tool definition</label>
              <textarea id="pg-tool" rows={8} className="mono" value={form.tool} onChange={(e) => set("tool", e.target.value)} /></>)}
          </fieldset>
          <div className="actions">
            {running
              ? <button type="button" className="danger" onClick={() => abort.current?.abort()}>Stop</button>
              : <button type="submit" disabled={!model}>Run</button>}
          </div>
        </form>
        <Panel title="Answer" id="answer-panel">
          <ErrorNote error={error} />
          {out ? <Output out={out} running={running} /> : <p className="muted">The streamed answer shows here, the reasoning apart.</p>}
          {out && !running && out.content && <button type="button" className="secondary" onClick={keep}>Keep in conversation</button>}
          {out?.id && <p className="muted small">Generation <code data-testid="generation-id">{out.id}</code></p>}
        </Panel>
      </div>
      <Dialog open={code !== null} title="Code" onClose={() => setCode(null)} wide>
        {code && (
          <>
            <h3>curl</h3>
            <pre className="code" data-testid="code-curl">{curlSnippet(code)}</pre>
            <h3>Python (openai SDK)</h3>
            <pre className="code" data-testid="code-python">{pythonSnippet(code)}</pre>
            <p className="muted small">Set <code>QWEN3_API_KEY</code> to your key; the console never holds one.</p>
          </>
        )}
      </Dialog>
    </>
  );
}

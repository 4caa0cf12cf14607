import { createColumnHelper } from "@tanstack/react-table";
import { useMemo, useState, type FormEvent } from "react";
import { useSearch } from "wouter";
import { get, query, type Generation, type GenerationPage, type KeyRecord, type ModelCard } from "../api";
import { DataTable } from "../components/DataTable";
import { Dialog } from "../components/Dialog";
import { ErrorNote, Stat } from "../components/Stat";
import { int, money, ms, when } from "../format";
import { useLoad } from "../hooks";
import { useSession } from "../session";

const PAGE = 25;
const col = createColumnHelper<Generation>();

interface Filters { key_id: string; model: string; status: string; since: string; until: string; id: string }

function apiFilters(f: Filters, admin: boolean): Record<string, string | null> {
  // Dates are whole UTC days: "until" includes its day.
  const until = f.until ? new Date(Date.parse(`${f.until}T00:00:00Z`) + 86400000).toISOString() : null;
  return {
    key_id: admin ? f.key_id || null : null, model: f.model || null, status: f.status || null,
    since: f.since ? `${f.since}T00:00:00Z` : null, until, id: f.id.trim() || null,
  };
}

function Detail({ g }: { g: Generation }) {
  return (
    <dl className="detail" data-testid="generation-detail">
      <Stat label="Id" value={<code>{g.id}</code>} />
      <Stat label="Created" value={when(g.created_at)} />
      <Stat label="Key" value={<>{g.key_name} <code>{g.key_label}</code></>} />
      <Stat label="Model" value={g.model} />
      <Stat label="Status" value={g.status} />
      <Stat label="Streamed" value={g.streamed ? "yes" : "no"} />
      <Stat label="Prompt tokens" value={int(g.prompt_tokens)} />
      <Stat label="Cached prompt tokens" value={int(g.cached_tokens)} />
      <Stat label="Completion tokens" value={int(g.completion_tokens)} />
      <Stat label="Reasoning tokens" value={int(g.reasoning_tokens)} hint="(part of completion)" />
      <Stat label="Cost" value={money(g.cost, g.currency)} />
      <Stat label="Time to first token" value={ms(g.ttft_ms)} />
      <Stat label="Duration" value={ms(g.duration_ms)} />
    </dl>
  );
}

export function Generations() {
  const { session } = useSession();
  const admin = session.role === "admin";
  const search = new URLSearchParams(useSearch());
  const empty: Filters = { key_id: search.get("key_id") ?? "", model: "", status: "", since: "", until: "", id: "" };
  const [draft, setDraft] = useState<Filters>(empty);
  const [filters, setFilters] = useState<Filters>(empty);
  const [offset, setOffset] = useState(0);
  const [open, setOpen] = useState<Generation | null>(null);
  const base = admin ? "/admin/generations" : "/v1/key/generations";
  const params = apiFilters(filters, admin);
  const page = useLoad(() => get<GenerationPage>(`${base}${query({ ...params, limit: PAGE, offset })}`),
    JSON.stringify([params, offset]));
  const keys = useLoad(() => (admin ? get<{ data: KeyRecord[] }>("/admin/keys").then((r) => r.data) : Promise.resolve([])), "keys");
  const models = useLoad(() => get<{ data: ModelCard[] }>("/v1/models").then((r) => r.data), "models");

  const columns = useMemo(() => [
    col.accessor("created_at", { header: "Time", cell: (c) => when(c.getValue()) }),
    col.accessor("id", { header: "Id", enableSorting: false, cell: (c) => (
      // The whole id is the button's name (and text, cut short by CSS): it opens the row's detail.
      <button type="button" className="link" onClick={() => setOpen(c.row.original)}>
        <code className="truncate">{c.getValue()}</code></button>) }),
    ...(admin ? [col.accessor("key_name", { header: "Key", cell: (c) => <>{c.getValue()} <code>{c.row.original.key_label}</code></> })] : []),
    col.accessor("model", { header: "Model" }),
    col.accessor("status", { header: "Status", cell: (c) => <span className={`badge ${c.getValue() === "completed" ? "ok" : "bad"}`}>{c.getValue()}</span> }),
    col.accessor((g) => g.prompt_tokens + g.completion_tokens, { id: "tokens", header: "Tokens", cell: (c) => int(c.getValue()) }),
    col.accessor("reasoning_tokens", { header: "Reasoning", cell: (c) => int(c.getValue()) }),
    col.accessor((g) => Number(g.cost), { id: "cost", header: "Cost", cell: (c) => money(c.row.original.cost, c.row.original.currency) }),
    col.accessor("ttft_ms", { header: "TTFT", cell: (c) => ms(c.getValue()) }),
    col.accessor("duration_ms", { header: "Duration", cell: (c) => ms(c.getValue()) }),
  ], [admin]);

  function apply(event: FormEvent) {
    event.preventDefault();
    setOffset(0);
    setFilters(draft);
  }
  function reset() {
    const none = { ...empty, key_id: "" };
    setDraft(none);
    setFilters(none);
    setOffset(0);
  }
  const set = (k: keyof Filters) => (e: { target: { value: string } }) => setDraft({ ...draft, [k]: e.target.value });
  const p = page.data;
  const csv = `${base}.csv${query(params)}`;

  return (
    <>
      <div className="page-head">
        <h1>Generations</h1>
        <a className="button secondary" href={csv} download="generations.csv">Export CSV</a>
      </div>
      <form className="filters" onSubmit={apply} aria-label="Filters">
        {admin && (
          <div><label htmlFor="f-key">Key</label>
            <select id="f-key" value={draft.key_id} onChange={set("key_id")}>
              <option value="">all keys</option>
              {(keys.data ?? []).map((k) => <option key={k.id} value={k.id}>{k.name} ({k.label})</option>)}
            </select></div>
        )}
        <div><label htmlFor="f-model">Model</label>
          <select id="f-model" value={draft.model} onChange={set("model")}>
            <option value="">all models</option>
            {(models.data ?? []).map((m) => <option key={m.id} value={m.id}>{m.id}</option>)}
          </select></div>
        <div><label htmlFor="f-status">Status</label>
          <select id="f-status" value={draft.status} onChange={set("status")}>
            <option value="">any</option><option value="completed">completed</option>
            <option value="cancelled">cancelled</option><option value="error">error</option>
          </select></div>
        <div><label htmlFor="f-since">From</label><input id="f-since" type="date" value={draft.since} onChange={set("since")} /></div>
        <div><label htmlFor="f-until">To</label><input id="f-until" type="date" value={draft.until} onChange={set("until")} /></div>
        <div><label htmlFor="f-id">Id</label><input id="f-id" placeholder="chatcmpl-…" value={draft.id} onChange={set("id")} /></div>
        <div className="filter-buttons"><button type="submit">Apply</button>
          <button type="button" className="secondary" onClick={reset}>Reset</button></div>
      </form>
      <ErrorNote error={page.error} />
      <DataTable data={p?.data ?? []} columns={columns} caption="Generations, newest first" rowKey={(g) => g.id}
                 empty="No generation matches." />
      <nav className="pager" aria-label="Pages">
        <button type="button" className="secondary" disabled={offset === 0} onClick={() => setOffset(Math.max(0, offset - PAGE))}>Newer</button>
        <span role="status" data-testid="page-range">
          {p ? (p.total ? `${int(offset + 1)}–${int(offset + p.data.length)} of ${int(p.total)}` : "0 of 0") : ""}
        </span>
        <button type="button" className="secondary" disabled={!p || offset + PAGE >= p.total} onClick={() => setOffset(offset + PAGE)}>Older</button>
      </nav>
      <Dialog open={open !== null} title="Generation" onClose={() => setOpen(null)} wide>
        {open && <Detail g={open} />}
      </Dialog>
    </>
  );
}

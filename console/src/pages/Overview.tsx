import { createColumnHelper } from "@tanstack/react-table";
import { useMemo } from "react";
import { Link } from "wouter";
import { get, type DailyUsage, type EngineStatus, type KeyUsage } from "../api";
import { BarList, UsageChart } from "../components/Chart";
import { DataTable } from "../components/DataTable";
import { ErrorNote, Panel, Stat } from "../components/Stat";
import { int, money, percent } from "../format";
import { useLoad } from "../hooks";

const ENGINE_EVERY_MS = 3000;
const USAGE_EVERY_MS = 30000;

export function EnginePanel() {
  const engine = useLoad(() => get<{ data: EngineStatus }>("/admin/engine").then((r) => r.data), "engine", ENGINE_EVERY_MS);
  const e = engine.data;
  return (
    <Panel title="Engine, live" id="engine"
           actions={<span className="muted small">{engine.updated ? `updated ${engine.updated.toLocaleTimeString()}` : ""}</span>}>
      <ErrorNote error={engine.error} />
      {e && (
        <dl className="stats" data-testid="engine-stats">
          <Stat label="Status" value={<span className={e.status === "ok" ? "badge ok" : "badge bad"}>{e.status}</span>} />
          <Stat label="Running" value={int(e.running)} hint="sequences" />
          <Stat label="Waiting" value={int(e.waiting)} hint="sequences" />
          <Stat label="KV cache in use" value={percent(e.kv_cache_usage)} />
          <Stat label="Prefix-cache hits" value={percent(e.prefix_cache_hit_rate)} />
          <Stat label="Tokens/s" value={e.tokens_per_second === null || e.tokens_per_second === undefined ? "—" : e.tokens_per_second.toFixed(1)}
                hint="last 10 s" />
        </dl>
      )}
    </Panel>
  );
}

const keyColumns = createColumnHelper<KeyUsage>();

export function Overview() {
  const usage = useLoad(() => get<DailyUsage>("/admin/usage/daily?days=30"), "usage", USAGE_EVERY_MS);
  const keys = useLoad(() => get<{ data: KeyUsage[] }>("/admin/usage/keys?days=30&limit=5").then((r) => r.data),
    "keys", USAGE_EVERY_MS);
  const u = usage.data;
  const currency = u?.data[0]?.currency ?? keys.data?.[0]?.currency ?? "CNY";
  const totals = useMemo(() => {
    const t = { requests: 0, errors: 0, tokens: 0, cost: 0 };
    for (const r of u?.data ?? []) {
      t.requests += r.requests; t.errors += r.errors; t.tokens += r.prompt_tokens + r.completion_tokens; t.cost += Number(r.cost);
    }
    return t;
  }, [u]);
  const perModel = useMemo(() => {
    const m = new Map<string, number>();
    for (const r of u?.data ?? []) m.set(r.model, (m.get(r.model) ?? 0) + r.requests);
    return [...m.entries()].sort((a, b) => b[1] - a[1]).map(([label, value]) => ({ label, value }));
  }, [u]);
  const columns = useMemo(() => [
    keyColumns.accessor("key_name", { header: "Key", cell: (c) => c.row.original.key_id
      ? <Link href={`/keys/${c.row.original.key_id}`}>{c.getValue()}</Link> : c.getValue() }),
    keyColumns.accessor("key_label", { header: "Label", cell: (c) => <code>{c.getValue()}</code> }),
    keyColumns.accessor("requests", { header: "Requests", cell: (c) => int(c.getValue()) }),
    keyColumns.accessor((r) => r.prompt_tokens + r.completion_tokens, { id: "tokens", header: "Tokens", cell: (c) => int(c.getValue()) }),
    keyColumns.accessor((r) => Number(r.cost), { id: "cost", header: "Spend", cell: (c) => money(c.row.original.cost, c.row.original.currency) }),
  ], []);

  return (
    <>
      <h1>Overview</h1>
      <ErrorNote error={usage.error} />
      <dl className="stats summary" aria-label="Last 30 days">
        <Stat label="Spend, 30 days" value={money(String(totals.cost), currency)} />
        <Stat label="Tokens, 30 days" value={int(totals.tokens)} />
        <Stat label="Requests, 30 days" value={int(totals.requests)} />
        <Stat label="Error rate" value={totals.requests ? percent(totals.errors / totals.requests) : "—"} />
      </dl>
      <div className="grid two">
        <Panel title="Spend and tokens per day" id="usage-chart">
          {u && <UsageChart usage={u} title="Spend and tokens per day" currency={currency} />}
        </Panel>
        <EnginePanel />
      </div>
      <div className="grid two even">
        <Panel title="Requests per model">
          {perModel.length ? <BarList rows={perModel} label="Requests" /> : <p className="muted">No requests in the last 30 days.</p>}
        </Panel>
        <Panel title="Top keys by spend">
          <ErrorNote error={keys.error} />
          <DataTable data={keys.data ?? []} columns={columns} caption="Top keys by spend, last 30 days"
                     rowKey={(r) => `${r.key_id ?? r.key_label}`} empty="No usage in the last 30 days." />
        </Panel>
      </div>
    </>
  );
}

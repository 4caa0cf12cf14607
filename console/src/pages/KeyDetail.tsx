import { useState, type FormEvent } from "react";
import { Link } from "wouter";
import { get, query, request, type DailyUsage, type KeyRecord } from "../api";
import { UsageChart } from "../components/Chart";
import { Dialog } from "../components/Dialog";
import { KeyForm, type KeyFields } from "../components/KeyForm";
import { ErrorNote, Panel, Stat } from "../components/Stat";
import { money, when } from "../format";
import { useLoad } from "../hooks";
import { StatusBadge } from "./Keys";

function TopUp({ keyId, onDone }: { keyId: number; onDone: () => void }) {
  const [amount, setAmount] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  async function submit(event: FormEvent) {
    event.preventDefault();
    setError(null);
    setDone(null);
    try {
      const r = await request<{ data: KeyRecord }>("POST", `/admin/keys/${keyId}/top-up`, { amount: amount.trim() });
      setDone(`Credit is now ${money(r.data.credit)}.`);
      setAmount("");
      onDone();
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    }
  }
  return (
    <form className="inline-form" onSubmit={submit}>
      <label htmlFor="topup-amount">Amount</label>
      <input id="topup-amount" inputMode="decimal" required pattern="[0-9]+(\.[0-9]+)?" value={amount}
             onChange={(e) => setAmount(e.target.value)} />
      <button type="submit">Top up</button>
      {error && <p className="error" role="alert">{error}</p>}
      <p className="muted" role="status">{done}</p>
    </form>
  );
}

export function KeyDetail({ id }: { id: number }) {
  const key = useLoad(() => get<{ data: KeyRecord }>(`/admin/keys/${id}`).then((r) => r.data), `key-${id}`);
  const usage = useLoad(() => get<DailyUsage>(`/admin/usage/daily${query({ days: 30, key_id: id })}`), `usage-${id}`);
  const [confirming, setConfirming] = useState(false);
  const [saved, setSaved] = useState<string | null>(null);
  const [revokeError, setRevokeError] = useState<string | null>(null);
  const k = key.data;

  async function save(fields: KeyFields) {
    await request("PATCH", `/admin/keys/${id}`, fields);
    setSaved("Limits saved.");
    key.reload();
  }

  async function revoke() {
    try {
      await request("DELETE", `/admin/keys/${id}`);
      setConfirming(false);
      key.reload();
    } catch (e) {
      setRevokeError(e instanceof Error ? e.message : String(e));
    }
  }

  if (key.error) return <><h1>Key {id}</h1><ErrorNote error={key.error} /></>;
  if (!k) return <p className="loading">Loading…</p>;
  return (
    <>
      <p><Link href="/keys">← All keys</Link></p>
      <div className="page-head">
        <h1>{k.name} <code className="label">{k.label}</code> <StatusBadge status={k.status} /></h1>
        {k.status !== "revoked" && <button type="button" className="danger" onClick={() => setConfirming(true)}>Revoke…</button>}
      </div>
      <dl className="stats summary">
        <Stat label="Credit" value={money(k.credit)} />
        <Stat label="Spent" value={money(k.spent)} />
        <Stat label="Left" value={money(k.credit_left)} />
        <Stat label="Created" value={when(k.created_at)} />
      </dl>
      <div className="grid two">
        <Panel title="Usage, last 30 days">
          <ErrorNote error={usage.error} />
          {usage.data && <UsageChart usage={usage.data} title="Usage per day" currency={usage.data.data[0]?.currency ?? "CNY"} />}
          <p><Link href={`/generations?key_id=${id}`}>This key's generations</Link></p>
        </Panel>
        <div>
          <Panel title="Limits">
            {k.status === "revoked" ? <p className="muted">Revoked {when(k.revoked_at)}: its limits no longer matter.</p> : (
              <>
                <KeyForm key={JSON.stringify(k)} initial={k} submitLabel="Save limits" onSubmit={save} idPrefix="edit" />
                <p className="muted" role="status">{saved}</p>
              </>
            )}
          </Panel>
          {k.status !== "revoked" && <Panel title="Top up"><TopUp keyId={id} onDone={key.reload} /></Panel>}
        </div>
      </div>
      <Dialog open={confirming} title="Revoke this key?" onClose={() => setConfirming(false)}>
        <p>Requests with <code>{k.label}</code> ({k.name}) will fail from now on. This cannot be undone.
          It has spent {money(k.spent)} so far.</p>
        <ErrorNote error={revokeError} />
        <div className="actions">
          <button type="button" className="secondary" onClick={() => setConfirming(false)}>Cancel</button>
          <button type="button" className="danger" onClick={() => void revoke()}>Revoke key</button>
        </div>
      </Dialog>
    </>
  );
}

// The limits of a key, as one form for creating and for editing (an empty field: no limit).
import { useState, type FormEvent } from "react";
import type { KeyRecord } from "../api";

export interface KeyFields {
  name: string;
  credit: string | null;
  rpm: number | null;
  tpm: number | null;
  models: string[] | null;
  expires_at: string | null;
}

const numberOrNull = (s: string) => (s.trim() === "" ? null : Number(s));

export function KeyForm({ initial, submitLabel, onSubmit, idPrefix }: {
  initial?: KeyRecord; submitLabel: string; onSubmit: (fields: KeyFields) => Promise<void>; idPrefix: string;
}) {
  const [name, setName] = useState(initial?.name ?? "");
  const [credit, setCredit] = useState(initial?.credit ?? "");
  const [rpm, setRpm] = useState(initial?.rpm?.toString() ?? "");
  const [tpm, setTpm] = useState(initial?.tpm?.toString() ?? "");
  const [models, setModels] = useState(initial?.models?.join(", ") ?? "");
  const [expires, setExpires] = useState(initial?.expires_at?.slice(0, 10) ?? "");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const id = (f: string) => `${idPrefix}-${f}`;

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const list = models.split(",").map((m) => m.trim()).filter(Boolean);
      await onSubmit({
        name: name.trim(), credit: credit.trim() === "" ? null : credit.trim(), rpm: numberOrNull(rpm),
        tpm: numberOrNull(tpm), models: list.length ? list : null,
        expires_at: expires ? `${expires}T00:00:00Z` : null,
      });
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="form-grid" onSubmit={submit}>
      <label htmlFor={id("name")}>Name</label>
      <input id={id("name")} required maxLength={200} value={name} onChange={(e) => setName(e.target.value)} />
      <label htmlFor={id("credit")}>Credit limit</label>
      <input id={id("credit")} inputMode="decimal" pattern="[0-9]+(\.[0-9]+)?" placeholder="unlimited" value={credit}
             onChange={(e) => setCredit(e.target.value)} />
      <label htmlFor={id("rpm")}>Requests per minute</label>
      <input id={id("rpm")} type="number" min={1} placeholder="unlimited" value={rpm} onChange={(e) => setRpm(e.target.value)} />
      <label htmlFor={id("tpm")}>Tokens per minute</label>
      <input id={id("tpm")} type="number" min={1} placeholder="unlimited" value={tpm} onChange={(e) => setTpm(e.target.value)} />
      <label htmlFor={id("models")}>Models</label>
      <input id={id("models")} placeholder="all models (or: qwen/qwen3-30b-a3b, …)" value={models}
             onChange={(e) => setModels(e.target.value)} />
      <label htmlFor={id("expires")}>Expires</label>
      <input id={id("expires")} type="date" value={expires} onChange={(e) => setExpires(e.target.value)} />
      {error && <p className="error full" role="alert">{error}</p>}
      <div className="full actions"><button type="submit" disabled={busy}>{busy ? "Saving…" : submitLabel}</button></div>
    </form>
  );
}

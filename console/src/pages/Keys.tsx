import { createColumnHelper } from "@tanstack/react-table";
import { useMemo, useState } from "react";
import { Link } from "wouter";
import { get, request, type KeyRecord } from "../api";
import { DataTable } from "../components/DataTable";
import { Dialog } from "../components/Dialog";
import { KeyForm, type KeyFields } from "../components/KeyForm";
import { ErrorNote } from "../components/Stat";
import { int, money, when } from "../format";
import { useLoad } from "../hooks";

const col = createColumnHelper<KeyRecord>();

export function StatusBadge({ status }: { status: string }) {
  return <span className={`badge ${status === "active" ? "ok" : "bad"}`}>{status}</span>;
}

/** The new key, once: it is in this answer only, so it is shown with a copy button and never again. */
function ShowOnce({ secret }: { secret: string }) {
  const [copied, setCopied] = useState(false);
  async function copy() {
    await navigator.clipboard.writeText(secret);
    setCopied(true);
  }
  return (
    <div className="show-once">
      <p role="alert"><strong>Copy this key now.</strong> It is shown once: only its hash is stored.</p>
      <label htmlFor="new-key-secret">New key</label>
      <div className="copy-row">
        <input id="new-key-secret" readOnly value={secret} onFocus={(e) => e.target.select()} spellCheck={false} />
        <button type="button" onClick={() => void copy()}>{copied ? "Copied" : "Copy"}</button>
      </div>
      <p className="muted small" aria-live="polite">{copied ? "The key is on the clipboard." : ""}</p>
    </div>
  );
}

export function Keys() {
  const keys = useLoad(() => get<{ data: KeyRecord[] }>("/admin/keys").then((r) => r.data), "keys");
  const [search, setSearch] = useState("");
  const [creating, setCreating] = useState(false);
  const [secret, setSecret] = useState<string | null>(null);

  const columns = useMemo(() => [
    col.accessor("name", { header: "Name", cell: (c) => <Link href={`/keys/${c.row.original.id}`}>{c.getValue()}</Link> }),
    col.accessor("label", { header: "Key", cell: (c) => <code>{c.getValue()}</code> }),
    col.accessor("status", { header: "Status", cell: (c) => <StatusBadge status={c.getValue()} /> }),
    col.accessor((k) => Number(k.credit ?? Infinity), { id: "credit", header: "Credit", cell: (c) => money(c.row.original.credit) }),
    col.accessor((k) => Number(k.spent), { id: "spent", header: "Spent", cell: (c) => money(c.row.original.spent) }),
    col.accessor((k) => Number(k.credit_left ?? Infinity), { id: "left", header: "Left", cell: (c) => money(c.row.original.credit_left) }),
    col.accessor("rpm", { header: "RPM", cell: (c) => int(c.getValue()) }),
    col.accessor("tpm", { header: "TPM", cell: (c) => int(c.getValue()) }),
    col.accessor((k) => (k.models ?? []).join(", "), { id: "models", header: "Models", cell: (c) => c.getValue() || "all" }),
    col.accessor("expires_at", { header: "Expires", cell: (c) => (c.getValue() ? when(c.getValue()).slice(0, 10) : "never") }),
  ], []);

  async function create(fields: KeyFields) {
    const r = await request<{ key: string; data: KeyRecord }>("POST", "/admin/keys", fields);
    setSecret(r.key);
    keys.reload();
  }

  function close() {
    setCreating(false);
    setSecret(null);
  }

  return (
    <>
      <div className="page-head">
        <h1>Keys</h1>
        <button type="button" onClick={() => setCreating(true)}>Create key</button>
      </div>
      <div className="toolbar">
        <label htmlFor="key-search">Search</label>
        <input id="key-search" type="search" placeholder="name, label or status" value={search}
               onChange={(e) => setSearch(e.target.value)} />
      </div>
      <ErrorNote error={keys.error} />
      <DataTable data={keys.data ?? []} columns={columns} caption="API keys" globalFilter={search}
                 rowKey={(k) => String(k.id)} empty="No keys yet: create one." />
      <Dialog open={creating} title={secret ? "Key created" : "Create a key"} onClose={close}>
        {secret ? (
          <>
            <ShowOnce secret={secret} />
            <div className="actions"><button type="button" onClick={close}>Done</button></div>
          </>
        ) : <KeyForm submitLabel="Create" onSubmit={create} idPrefix="create" />}
      </Dialog>
    </>
  );
}

import { useState, type FormEvent } from "react";
import { request, type SessionInfo } from "../api";

export function SignIn({ onSignedIn }: { onSignedIn: (s: SessionInfo) => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = await request<{ data: SessionInfo }>("POST", "/console/api/session", { key });
      setKey("");
      onSignedIn(r.data);
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
    } finally {
      setBusy(false);
    }
  }

  return (
    <main id="main" className="signin">
      <form className="card signin-card" onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">qwen3-api console</h1>
        <p className="muted">Sign in with the admin key (<code>QWEN3_API_ADMIN_KEY</code>) to manage keys and usage, or
          with an <code>sk-</code> key to see that key's own usage, generations and playground.</p>
        <label htmlFor="signin-key">Key</label>
        <input id="signin-key" name="key" type="password" autoComplete="off" spellCheck={false} required
               value={key} onChange={(e) => setKey(e.target.value)} aria-describedby={error ? "signin-error" : undefined} />
        {error && <p id="signin-error" className="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy || !key}>{busy ? "Signing in…" : "Sign in"}</button>
        <p className="muted small">The key is sent once; the session is a cookie scripts cannot read.</p>
      </form>
    </main>
  );
}

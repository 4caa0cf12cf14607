import { Link } from "wouter";

export function NotAllowed() {
  return (
    <section aria-labelledby="forbidden-title">
      <h1 id="forbidden-title">Admin only</h1>
      <p role="alert">This page needs the admin key. You are signed in with an API key, which sees only its own usage,
        generations, models and playground.</p>
      <p><Link href="/">Back to my key</Link></p>
    </section>
  );
}

export function NotFound() {
  return (
    <section aria-labelledby="missing-title">
      <h1 id="missing-title">No such page</h1>
      <p><Link href="/">Back to the start</Link></p>
    </section>
  );
}

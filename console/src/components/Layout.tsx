import type { ReactNode } from "react";
import { Link, useLocation } from "wouter";
import { useSession } from "../session";

function NavLink({ href, children }: { href: string; children: ReactNode }) {
  const [location] = useLocation();
  const current = href === "/" ? location === "/" : location === href || location.startsWith(`${href}/`);
  return (
    <Link href={href} aria-current={current ? "page" : undefined} className={current ? "nav-link current" : "nav-link"}>
      {children}
    </Link>
  );
}

export function Layout({ children }: { children: ReactNode }) {
  const { session, signOut } = useSession();
  const admin = session.role === "admin";
  return (
    <>
      <a className="skip-link" href="#main">Skip to content</a>
      <header className="top">
        <span className="brand">qwen3-api <span className="brand-sub">console</span></span>
        <nav aria-label="Console">
          <NavLink href="/">{admin ? "Overview" : "My key"}</NavLink>
          {admin && <NavLink href="/keys">Keys</NavLink>}
          <NavLink href="/generations">Generations</NavLink>
          <NavLink href="/models">Models</NavLink>
          <NavLink href="/playground">Playground</NavLink>
        </nav>
        <div className="who">
          <span data-testid="who">
            {admin ? "Admin" : <>Key <strong>{session.name}</strong> <code>{session.label}</code></>}
          </span>
          <button type="button" className="secondary" onClick={() => void signOut()}>Sign out</button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>{children}</main>
    </>
  );
}

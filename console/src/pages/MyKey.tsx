// What an sk- key sees of itself: limits, credit, usage per day, its latest generations.
import { Link } from "wouter";
import { get, type DailyUsage, type GenerationPage, type MyKey as MyKeyInfo } from "../api";
import { UsageChart } from "../components/Chart";
import { ErrorNote, Panel, Stat } from "../components/Stat";
import { int, money, when } from "../format";
import { useLoad } from "../hooks";

export function MyKey() {
  const info = useLoad(() => get<{ data: MyKeyInfo }>("/v1/key").then((r) => r.data), "key", 30000);
  const usage = useLoad(() => get<DailyUsage>("/v1/key/usage?days=30"), "usage", 30000);
  const recent = useLoad(() => get<GenerationPage>("/v1/key/generations?limit=5"), "recent", 30000);
  const k = info.data;
  const currency = usage.data?.data[0]?.currency ?? recent.data?.data[0]?.currency ?? "CNY";
  return (
    <>
      <h1>My key</h1>
      <ErrorNote error={info.error} />
      {k && (
        <dl className="stats summary" data-testid="my-key">
          <Stat label="Key" value={<>{k.name} <code>{k.label}</code></>} />
          <Stat label="Credit" value={money(k.limit, currency)} />
          <Stat label="Spent" value={money(k.usage, currency)} />
          <Stat label="Left" value={money(k.limit_remaining, currency)} />
          <Stat label="Requests per minute" value={k.rate_limit.requests_per_minute ?? "unlimited"} />
          <Stat label="Tokens per minute" value={k.rate_limit.tokens_per_minute ?? "unlimited"} />
          <Stat label="Models" value={k.models?.join(", ") ?? "all"} />
          <Stat label="Expires" value={k.expires_at ? when(k.expires_at) : "never"} />
          <Stat label="Last 24 h" value={`${int(k.usage_last_24h.requests)} request${k.usage_last_24h.requests === 1 ? "" : "s"}, ${money(k.usage_last_24h.cost, currency)}`} />
        </dl>
      )}
      <div className="grid two">
        <Panel title="Usage, last 30 days">
          <ErrorNote error={usage.error} />
          {usage.data && <UsageChart usage={usage.data} title="My usage per day" currency={currency} />}
        </Panel>
        <Panel title="Latest generations" actions={<Link href="/generations">All</Link>}>
          <ul className="plain">
            {(recent.data?.data ?? []).map((g) => (
              <li key={g.id}><code>{g.id.slice(0, 18)}…</code> {g.model} · {g.status} ·{" "}
                {int(g.prompt_tokens + g.completion_tokens)} tokens · {money(g.cost, g.currency)}</li>
            ))}
            {recent.data && recent.data.data.length === 0 && <li className="muted">None yet: try the playground.</li>}
          </ul>
        </Panel>
      </div>
    </>
  );
}

// Charts through Chart.js (canvas), each with the same numbers as a table for screen readers and keyboards.
import {
  BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, LineController, LineElement, PointElement,
  Tooltip, type ChartConfiguration,
} from "chart.js";
import { useEffect, useMemo, useRef } from "react";
import type { DailyUsage } from "../api";
import { int, money } from "../format";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController, LineElement, PointElement,
  Tooltip, Legend);
Chart.defaults.animation = false; // dashboards redraw on every refresh: no motion
Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
Chart.defaults.color = "#1f2937";

function Canvas({ config, label }: { config: ChartConfiguration; label: string }) {
  const ref = useRef<HTMLCanvasElement>(null);
  const chart = useRef<Chart | null>(null);
  useEffect(() => {
    if (!ref.current) return undefined;
    chart.current = new Chart(ref.current, config);
    return () => { chart.current?.destroy(); chart.current = null; };
  }, [config]);
  return <div className="chart"><canvas ref={ref} role="img" aria-label={label} /></div>;
}

export interface DayTotals { day: string; requests: number; errors: number; tokens: number; cost: number; }

export function dayTotals(usage: DailyUsage): DayTotals[] {
  const byDay = new Map(usage.days.map((day) => [day, { day, requests: 0, errors: 0, tokens: 0, cost: 0 }]));
  for (const r of usage.data) {
    const t = byDay.get(r.day);
    if (!t) continue;
    t.requests += r.requests;
    t.errors += r.errors;
    t.tokens += r.prompt_tokens + r.completion_tokens;
    t.cost += Number(r.cost);
  }
  return [...byDay.values()];
}

/** Tokens (bars) and spend (line) per day, with the table under a disclosure. */
export function UsageChart({ usage, title, currency }: { usage: DailyUsage; title: string; currency: string }) {
  const days = useMemo(() => dayTotals(usage), [usage]);
  // The same object while the data is the same: a parent's re-render must not redraw the chart.
  const chartConfig = useMemo<ChartConfiguration>(() => ({
    type: "bar",
    data: {
      labels: days.map((d) => d.day.slice(5)),
      datasets: [
        { type: "bar", label: "Tokens", data: days.map((d) => d.tokens), backgroundColor: "#93c5fd", yAxisID: "tokens" },
        { type: "line", label: `Spend (${currency})`, data: days.map((d) => d.cost), borderColor: "#b45309",
          backgroundColor: "#b45309", yAxisID: "cost", pointRadius: 2, tension: 0.2 },
      ],
    },
    options: {
      maintainAspectRatio: false,
      interaction: { mode: "index", intersect: false },
      scales: {
        tokens: { type: "linear", position: "left", beginAtZero: true, title: { display: true, text: "tokens" } },
        cost: { type: "linear", position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
          title: { display: true, text: currency },
          // Small amounts as decimals (0.000045), not Chart.js' exponent form (4.5E-5).
          ticks: { callback: (v) => Number(v).toLocaleString("en-US", { maximumSignificantDigits: 2 }) } },
      },
    },
  }), [days, currency]);
  const total = days.reduce((a, d) => ({ tokens: a.tokens + d.tokens, cost: a.cost + d.cost }), { tokens: 0, cost: 0 });
  return (
    <figure className="figure">
      <Canvas config={chartConfig}
              label={`${title}: ${int(total.tokens)} tokens and ${money(String(total.cost), currency)} over ${days.length} days`} />
      <details className="chart-data">
        <summary>{title} as a table</summary>
        <div className="table-scroll" tabIndex={0} role="region" aria-label={`${title} data`}>
          <table data-testid="usage-table">
            <thead><tr><th scope="col">Day</th><th scope="col">Requests</th><th scope="col">Errors</th>
              <th scope="col">Tokens</th><th scope="col">Spend</th></tr></thead>
            <tbody>
              {days.filter((d) => d.requests > 0).map((d) => (
                <tr key={d.day} data-day={d.day}>
                  <th scope="row">{d.day}</th><td>{int(d.requests)}</td><td>{int(d.errors)}</td>
                  <td>{int(d.tokens)}</td><td>{money(String(d.cost), currency)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </figure>
  );
}

/** One horizontal bar per label (requests per model). */
export function BarList({ rows, label }: { rows: { label: string; value: number }[]; label: string }) {
  const key = JSON.stringify(rows);
  const config = useMemo<ChartConfiguration>(() => ({
    type: "bar",
    data: { labels: rows.map((r) => r.label), datasets: [{ label, data: rows.map((r) => r.value), backgroundColor: "#4f46e5" }] },
    options: { indexAxis: "y", maintainAspectRatio: false, plugins: { legend: { display: false } },
      scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } },
  }), [key, label]);
  return <Canvas config={config} label={`${label}: ${rows.map((r) => `${r.label} ${r.value}`).join(", ") || "none"}`} />;
}

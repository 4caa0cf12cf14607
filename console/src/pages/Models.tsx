import { get, type ModelCard } from "../api";
import { ErrorNote } from "../components/Stat";
import { int } from "../format";
import { useLoad } from "../hooks";

export function Models() {
  const models = useLoad(() => get<{ data: ModelCard[] }>("/v1/models").then((r) => r.data), "models");
  return (
    <>
      <h1>Models</h1>
      <ErrorNote error={models.error} />
      <div className="table-scroll" tabIndex={0} role="region" aria-label="Model catalog">
        <table>
          <caption className="sr-only">The model catalog, prices per 1,000 tokens</caption>
          <thead><tr>
            <th scope="col">Model</th><th scope="col">Where</th><th scope="col">Precision</th>
            <th scope="col">Context</th><th scope="col">Max output</th><th scope="col">Input / 1k</th>
            <th scope="col">Cached input / 1k</th><th scope="col">Output / 1k</th><th scope="col">Parameters</th>
          </tr></thead>
          <tbody>
            {(models.data ?? []).map((m) => (
              <tr key={m.id}>
                <th scope="row"><code>{m.id}</code><div className="muted small">{m.name}</div></th>
                <td>{m.hosting ?? "—"}</td>
                <td>{m.quantization ?? "—"}</td>
                <td>{int(m.context_length)}</td>
                <td>{int(m.top_provider?.max_completion_tokens)}</td>
                <td>{m.pricing.prompt_per_1k} {m.pricing.currency}</td>
                <td>{m.pricing.input_cache_read ? `${(Number(m.pricing.input_cache_read) * 1000).toString()} ${m.pricing.currency}` : "—"}</td>
                <td>{m.pricing.completion_per_1k} {m.pricing.currency}</td>
                <td><ul className="chips" aria-label={`Parameters of ${m.id}`}>
                  {m.supported_parameters.map((p) => <li key={p}>{p}</li>)}</ul></td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {(models.data ?? []).filter((m) => m.description).map((m) => (
        <p key={m.id} className="muted small"><code>{m.id}</code>: {m.description}</p>
      ))}
    </>
  );
}

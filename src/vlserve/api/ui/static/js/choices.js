// Which launch parameters can be picked for one family, given the earlier picks, and why the others cannot.
// Pure data in, data out (no DOM), so the rules are testable on their own.
//
// The registry's family JSON is the source of truth: spec.engines = {"vLLM": ["none"], "Transformers": [...]}.
// `runnable` (from GET /v1/engines/{name}: engine -> [{model_format, model_size_in_billions, quantizations}])
// narrows that to what this server can run; null means "not known", and only the registry's rules apply.

export const FIELDS = ["engine", "format", "size", "quantization"];

export const sizeLabel = (spec) => String(spec.model_size_in_billions);
const list = (values) => values.join(", ");
const unique = (values) => [...new Set(values)];

function canRun(runnable, engine, spec, quantization) {
  if (!runnable) return true;
  return (runnable[engine] ?? []).some((entry) =>
    entry.model_format === spec.model_format &&
    String(entry.model_size_in_billions) === sizeLabel(spec) &&
    (quantization === undefined || entry.quantizations.includes(quantization)));
}

function engineOptions(family, runnable) {
  const engines = unique(family.model_specs.flatMap((s) => Object.keys(s.engines)));
  return engines.map((engine) => {
    if (runnable && !runnable[engine]) {
      return { value: engine, ok: false, why: `${engine} is not installed on this server or cannot run ${family.model_name} here` };
    }
    return { value: engine, ok: true, why: "" };
  });
}

function formatOptions(family, engine, runnable) {
  return unique(family.model_specs.map((s) => s.model_format)).map((format) => {
    const specs = family.model_specs.filter((s) => s.model_format === format);
    if (!specs.some((s) => engine in s.engines)) {
      return { value: format, ok: false, why: `${engine} serves no ${format} spec of ${family.model_name}` };
    }
    if (!specs.some((s) => engine in s.engines && canRun(runnable, engine, s))) {
      return { value: format, ok: false, why: `${engine} cannot run ${format} on this server` };
    }
    return { value: format, ok: true, why: "" };
  });
}

function sizeOptions(family, engine, format, runnable) {
  const all = unique(family.model_specs.map(sizeLabel)).sort((a, b) => Number(a) - Number(b));
  const ofFormat = family.model_specs.filter((s) => s.model_format === format);
  return all.map((size) => {
    const spec = ofFormat.find((s) => sizeLabel(s) === size);
    if (!spec) {
      return { value: size, ok: false, why: `${family.model_name} ${format} sizes are ${list(ofFormat.map(sizeLabel))}` };
    }
    if (!(engine in spec.engines)) {
      const others = Object.keys(spec.engines);
      return { value: size, ok: false, why: `${engine} cannot serve ${format} ${size}B; use ${list(others)}` };
    }
    if (!canRun(runnable, engine, spec)) {
      return { value: size, ok: false, why: `${engine} cannot run ${format} ${size}B on this server` };
    }
    return { value: size, ok: true, why: "" };
  });
}

// "vLLM serves pytorch only with quantization none" when the rule holds for every size of the format,
// else the size is named too.
function engineRule(family, engine, spec) {
  const allowed = spec.engines[engine];
  const sameFormat = family.model_specs.filter((s) => s.model_format === spec.model_format);
  const uniform = sameFormat.every((s) => list(s.engines[engine] ?? []) === list(allowed));
  const what = uniform ? spec.model_format : `${spec.model_format} ${sizeLabel(spec)}B`;
  return `${engine} serves ${what} only with quantization ${list(allowed)}`;
}

function quantizationOptions(family, engine, spec, runnable) {
  const all = unique(family.model_specs.flatMap((s) => s.quantizations));
  all.sort((a, b) => (b === "none") - (a === "none"));
  return all.map((q) => {
    if (!spec.quantizations.includes(q)) {
      const label = `${family.model_name} ${spec.model_format} ${sizeLabel(spec)}B`;
      return { value: q, ok: false, why: `${label} quantizations are ${list(spec.quantizations)}` };
    }
    if (!spec.engines[engine].includes(q)) return { value: q, ok: false, why: engineRule(family, engine, spec) };
    if (!canRun(runnable, engine, spec, q)) {
      return { value: q, ok: false, why: `${engine} cannot run ${q} on this server` };
    }
    return { value: q, ok: true, why: "" };
  });
}

// Keep a pick that is still valid, else take the preferred valid option, else the first valid one.
function settle(options, wanted, preferred) {
  const ok = options.filter((o) => o.ok).map((o) => o.value);
  if (ok.includes(wanted)) return wanted;
  return ok.includes(preferred) ? preferred : ok[0] ?? null;
}

// family: the registration JSON; pick: {engine, format, size, quantization} (any may be missing).
// Returns {options: {field: [{value, ok, why}]}, pick (every field valid or null), spec (or null)}.
export function choices(family, pick = {}, runnable = null) {
  const options = {};
  const settled = {};
  options.engine = engineOptions(family, runnable);
  settled.engine = settle(options.engine, pick.engine, "Transformers");
  options.format = formatOptions(family, settled.engine, runnable);
  settled.format = settle(options.format, pick.format, "pytorch");
  options.size = sizeOptions(family, settled.engine, settled.format, runnable);
  settled.size = settle(options.size, pick.size);
  const spec = family.model_specs.find((s) => s.model_format === settled.format && sizeLabel(s) === settled.size) ?? null;
  options.quantization = spec ? quantizationOptions(family, settled.engine, spec, runnable) : [];
  settled.quantization = settle(options.quantization, pick.quantization, "none");
  return { options, pick: settled, spec: settled.quantization ? spec : null };
}

// The CLI's extra `--key value` engine options, written one `key=value` a line: numbers, booleans, null and JSON
// become typed values, anything else stays a string.
export function parseOptions(text) {
  const options = {};
  for (const [n, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const at = line.indexOf("=");
    if (at <= 0) throw new Error(`engine options line ${n + 1}: write key=value (got "${line}")`);
    const key = line.slice(0, at).trim().replace(/^--/, "").replaceAll("-", "_");
    options[key] = scalar(line.slice(at + 1).trim());
  }
  return options;
}

export function scalar(text) {
  const lowered = text.toLowerCase();
  if (lowered === "true" || lowered === "false") return lowered === "true";
  if (lowered === "none" || lowered === "null") return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

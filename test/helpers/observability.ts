import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { ROOT } from './cli.js';

export const RULES = `${ROOT}deploy/prometheus/ami2ban-rules.yml`;
export const RULE_TESTS = `${ROOT}deploy/prometheus/ami2ban-rules.test.yml`;
export const DASHBOARD = `${ROOT}deploy/grafana/ami2ban.json`;

interface Rules {
  groups: { name: string; rules: { alert: string; expr: string; for?: string }[] }[];
}

export interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: { refId: string; expr: string; datasource?: { uid: string } }[];
}

export function alertRules(): Rules['groups'][number]['rules'] {
  return (parse(readFileSync(RULES, 'utf8')) as Rules).groups.flatMap((g) => g.rules);
}

export function dashboard(): { uid: string; title: string; panels: Panel[]; templating: { list: { name: string }[] } } {
  return JSON.parse(readFileSync(DASHBOARD, 'utf8')) as ReturnType<typeof dashboard>;
}

/** Every PromQL expression shipped: the alerts' and the dashboard's (Grafana's variables filled in). */
export function shippedExpressions(): string[] {
  const panels = dashboard().panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr.replaceAll('$__rate_interval', '5m').replaceAll('$instance', '.*')));
  return [...alertRules().map((r) => r.expr), ...panels];
}

/** The metric names those expressions use (histogram series reduced to the histogram's name). */
export function referencedMetrics(): Set<string> {
  const names = new Set<string>();
  for (const e of shippedExpressions()) for (const m of e.matchAll(/\b((?:ami2ban|process|nodejs)_[a-z_]+)/g)) names.add((m[1] ?? '').replace(/_(bucket|count|sum)$/, ''));
  return names;
}

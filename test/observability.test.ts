// The dashboard and alert rules that ship in deploy/: checked by Prometheus' own promtool (syntax,
// and unit tests of every alert) and against the metrics the daemon really exports (control.test.ts).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { RULES, RULE_TESTS, alertRules, dashboard, shippedExpressions } from './helpers/observability.js';

function promtool(...args: string[]): { status: number | null; out: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', cwd: dirname(RULES) });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('deploy/prometheus/ami2ban-rules.yml', () => {
  it('passes `promtool check rules`', () => {
    const r = promtool('check', 'rules', RULES);
    expect(r.out).toContain(`SUCCESS: ${String(alertRules().length)} rules found`);
    expect(r.status).toBe(0);
  });

  it('every alert is unit-tested, firing and quiet, and the tests pass (`promtool test rules`)', () => {
    const tests = parse(readFileSync(RULE_TESTS, 'utf8')) as { tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] };
    const cases = tests.tests.flatMap((t) => t.alert_rule_test);
    for (const { alert } of alertRules()) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(mine.some((c) => c.exp_alerts.length > 0), `${alert} fires`).toBe(true);
      expect(mine.some((c) => c.exp_alerts.length === 0), `${alert} stays quiet`).toBe(true);
    }
    const r = promtool('test', 'rules', RULE_TESTS);
    expect(r.out).toContain('SUCCESS');
    expect(r.status).toBe(0);
  });

  it('covers what operators asked for: AMI down over 1 m, firewall errors, store degraded, failures from banned addresses, ban-rate spike, tracked addresses near the cap', () => {
    const names = alertRules().map((r) => r.alert);
    for (const a of ['Ami2banAmiDown', 'Ami2banFirewallErrors', 'Ami2banBansNotEnforced', 'Ami2banStoreDegraded', 'Ami2banFailuresFromBannedAddresses', 'Ami2banBanRateSpike', 'Ami2banTrackedNearCap']) expect(names).toContain(a);
    expect(alertRules().find((r) => r.alert === 'Ami2banAmiDown')?.for).toBe('1m');
  });
});

describe('deploy/grafana/ami2ban.json', () => {
  const d = dashboard();
  const panels = d.panels.filter((p) => p.type !== 'row');

  it('is an importable dashboard: a uid, a datasource variable, an instance filter, unique panel ids', () => {
    expect(d.uid).toBe('ami2ban');
    expect(d.templating.list.map((v) => v.name)).toEqual(['datasource', 'instance']);
    const ids = d.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) expect(t.expr, p.title).toContain('instance=~"$instance"');
    }
  });

  it('lays its panels on the 24-column grid without overlaps', () => {
    const cells = new Set<string>();
    for (const p of d.panels) {
      const g = p.gridPos;
      expect(g.x + g.w, p.title).toBeLessThanOrEqual(24);
      for (let x = g.x; x < g.x + g.w; x++) {
        for (let y = g.y; y < g.y + g.h; y++) {
          const cell = `${String(x)},${String(y)}`;
          expect(cells.has(cell), `${p.title} overlaps at ${cell}`).toBe(false);
          cells.add(cell);
        }
      }
    }
  });

  it('shows what the issue lists: events by name, failures, bans and unbans, active bans by family, ban latency quantiles, dropped packets, AMI connection and last-event age, firewall and store errors, tracked addresses and evictions', () => {
    const exprs = panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr)).join('\n');
    for (const m of ['ami2ban_security_events_total', 'ami2ban_failures_total', 'ami2ban_bans_total', 'ami2ban_unbans_total', 'ami2ban_active_bans', 'histogram_quantile(0.99, sum by (le) (rate(ami2ban_ban_latency_seconds_bucket', 'ami2ban_dropped_packets_total', 'ami2ban_ami_connected', 'ami2ban_ami_last_event_timestamp_seconds', 'ami2ban_firewall_errors_total', 'ami2ban_store_healthy', 'ami2ban_tracked_addresses', 'ami2ban_evictions_total']) {
      expect(exprs, m).toContain(m);
    }
  });
});

it('every shipped PromQL expression parses (promtool check rules, as recording rules)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ami2ban-promql-'));
  const file = join(dir, 'exprs.yml');
  const rules = shippedExpressions().map((expr, i) => ({ record: `ami2ban:shipped_${String(i)}`, expr }));
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'shipped', rules }] }));
  const r = promtool('check', 'rules', file);
  expect(r.out).toContain(`SUCCESS: ${String(rules.length)} rules found`);
  expect(r.status).toBe(0);
});

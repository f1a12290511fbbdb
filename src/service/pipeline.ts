// Joins the rooms: SecurityEvent (ami) → EngineEvent (engine); config → engine policy.
import type { SecurityEvent } from '../ami/security-event.js';
import { formatDuration } from '../config/duration.js';
import type { BanDecision, EngineEvent } from '../engine/engine.js';

export function toEngineEvent(e: SecurityEvent): EngineEvent {
  const r = e.remoteAddress;
  return {
    name: e.name,
    severity: e.severity,
    service: e.service,
    sessionId: e.sessionId,
    // The zone goes along: the engine never bans a link-scoped address.
    ip: r === null ? null : r.zone === null ? r.ip : `${r.ip}%${r.zone}`,
    address: r === null ? undefined : r.zone === null ? { family: r.family, ip: r.ip } : { family: r.family, ip: r.ip, zone: r.zone },
    aclName: e.aclName,
    account: e.accountId,
    transport: r?.transport ?? '',
  };
}

/** `InvalidAccountID×2,ChallengeResponseFailed×1` */
export function eventSummary(events: Readonly<Record<string, number>>): string {
  return Object.entries(events)
    .map(([name, n]) => `${name}×${n}`)
    .join(',');
}

/** The fields of the one log line written per ban. */
export function banLogFields(d: BanDecision): Record<string, unknown> {
  return {
    ip: d.ip,
    family: d.family,
    reason: d.reason,
    failures: d.failures,
    events: eventSummary(d.events),
    duration: formatDuration(d.banSeconds),
    banSeconds: d.banSeconds === Number.POSITIVE_INFINITY ? -1 : Math.round(d.banSeconds),
    until: d.until === Number.POSITIVE_INFINITY ? 'permanent' : new Date(d.until).toISOString(),
    previousBans: d.previousBans,
    ...(d.origin === undefined ? {} : { origin: d.origin }),
  };
}

/**
 * The failures behind a ban, one line each: `  2026-11-22T04:51:40.860Z  ChallengeResponseFailed  account 1001  UDP`,
 * and a last line when fewer are shown than were counted.
 */
export function failureLines(details: readonly { readonly at: string | number; readonly event: string; readonly account: string; readonly transport: string }[], counted: number, indent = '  '): string[] {
  const lines = details.map((d) => {
    const at = typeof d.at === 'number' ? new Date(d.at).toISOString() : d.at;
    return `${indent}${at}  ${d.event}${d.account === '' ? '' : `  account ${d.account}`}${d.transport === '' ? '' : `  ${d.transport}`}`;
  });
  if (details.length < counted) lines.push(`${indent}(the last ${String(details.length)} of ${String(counted)} failures: the details of older ones were not kept)`);
  return lines;
}

// The security event names Asterisk raises (include/asterisk/security_events_defs.h).
export const SECURITY_EVENT_NAMES = [
  'FailedACL',
  'InvalidAccountID',
  'SessionLimit',
  'MemoryLimit',
  'LoadAverageLimit',
  'RequestNotSupported',
  'RequestNotAllowed',
  'AuthMethodNotAllowed',
  'RequestBadFormat',
  'SuccessfulAuth',
  'UnexpectedAddress',
  'ChallengeResponseFailed',
  'InvalidPassword',
  'ChallengeSent',
  'InvalidTransport',
] as const;

export type SecurityEventName = (typeof SECURITY_EVENT_NAMES)[number];

const NAMES: ReadonlySet<string> = new Set(SECURITY_EVENT_NAMES);

export function isSecurityEventName(name: string): name is SecurityEventName {
  return NAMES.has(name);
}

// Every error of ours carries a stable code and, where there is one, the cause.

export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'AMI_LOGIN_FAILED'
  | 'AMI_ACTION_FAILED'
  | 'AMI_TIMEOUT'
  | 'AMI_DISCONNECTED'
  | 'REPLAY_INPUT'
  | 'FIREWALL_FAILED'
  | 'STORE_FAILED'
  | 'CONTROL_FAILED';

export class Ami2banError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

export interface ConfigProblem {
  readonly variable: string;
  readonly problem: string;
}

export class ConfigError extends Ami2banError {
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[]) {
    const lines = problems.map((p) => `  ${p.variable}: ${p.problem}`);
    super('CONFIG_INVALID', `invalid configuration:\n${lines.join('\n')}`);
    this.problems = problems;
  }
}

export class AmiLoginError extends Ami2banError {
  constructor(message: string) {
    super('AMI_LOGIN_FAILED', message);
  }
}

export class AmiActionError extends Ami2banError {
  constructor(message: string) {
    super('AMI_ACTION_FAILED', message);
  }
}

export class AmiTimeoutError extends Ami2banError {
  constructor(message: string) {
    super('AMI_TIMEOUT', message);
  }
}

export class AmiDisconnectedError extends Ami2banError {
  constructor(message: string, cause?: unknown) {
    super('AMI_DISCONNECTED', message, { cause });
  }
}

export class ReplayInputError extends Ami2banError {
  constructor(message: string, cause?: unknown) {
    super('REPLAY_INPUT', message, { cause });
  }
}

export class FirewallError extends Ami2banError {
  constructor(message: string, cause?: unknown) {
    super('FIREWALL_FAILED', message, { cause });
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class StoreError extends Ami2banError {
  constructor(message: string, cause?: unknown) {
    super('STORE_FAILED', message, { cause });
  }
}

export class ControlError extends Ami2banError {
  constructor(message: string, cause?: unknown) {
    super('CONTROL_FAILED', message, { cause });
  }
}

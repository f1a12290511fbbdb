// Our small interface over an AMI connection, so the library underneath can be replaced.
import type { AmiMessage, ParserIssue } from './parser.js';

export interface AmiTarget {
  readonly host: string;
  readonly port: number;
  readonly username: string;
  readonly secret: string;
}

export interface AmiSessionHandlers {
  onGreeting(text: string): void;
  onEvent(message: AmiMessage): void;
  onIssue(issue: ParserIssue): void;
  onClose(error: Error | undefined): void;
}

export interface AmiSession {
  /** Rejects with AmiLoginError when Asterisk refuses the credentials. */
  login(): Promise<void>;
  /** Sends an action; resolves with the response headers, rejects on `Response: Error` or close. */
  action(fields: Readonly<Record<string, string>>): Promise<Readonly<Record<string, string>>>;
  destroy(): void;
}

export interface AmiConnector {
  /** Resolves once the TCP connection is up. */
  connect(target: AmiTarget, handlers: AmiSessionHandlers): Promise<AmiSession>;
}

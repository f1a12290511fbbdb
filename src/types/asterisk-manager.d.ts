declare module 'asterisk-manager' {
  type Callback = (err?: Record<string, unknown> | null, response?: Record<string, unknown>) => void;

  interface Manager {
    options: { port: number; host: string; username: string; password: string; events: boolean };
    connect(port: number, host: string, callback?: (err: null) => void): void;
    login(callback?: (err?: Record<string, unknown> | null) => void): void;
    action(action: Record<string, string>, callback?: Callback): string;
    disconnect(callback?: () => void): void;
    isConnected(): boolean;
    emit(event: string, ...args: unknown[]): boolean;
    on(event: string, listener: (...args: unknown[]) => void): void;
  }

  function createManager(
    port: number | undefined,
    host: string,
    username: string,
    password: string,
    events: boolean,
  ): Manager;

  export default createManager;
}

// The container files cannot be built here (no Docker engine): these checks read them and assert
// the properties operators rely on.
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig } from '../src/config/config.js';
import { VARIABLES } from '../src/config/variables.js';
import { ROOT } from './helpers/cli.js';

const read = (p: string): string => readFileSync(`${ROOT}${p}`, 'utf8');

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** Dockerfile instructions, with line continuations joined and comments dropped, grouped by stage. */
function dockerfileStages(text: string): Instruction[][] {
  const joined = text.replace(/\\\n/g, ' ');
  const stages: Instruction[][] = [[]];
  for (const raw of joined.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [keyword = '', ...rest] = line.split(/\s+/);
    const ins = { keyword: keyword.toUpperCase(), args: rest.join(' ') };
    if (ins.keyword === 'FROM') stages.push([]);
    stages[stages.length - 1]?.push(ins);
  }
  return stages;
}

describe('Dockerfile', () => {
  const stages = dockerfileStages(read('Dockerfile'));
  const [preamble = [], build = [], runtime = []] = stages;
  const args = (stage: Instruction[], keyword: string): string[] => stage.filter((i) => i.keyword === keyword).map((i) => i.args);
  const runs = (stage: Instruction[]): string => args(stage, 'RUN').join('\n');

  it('has a build stage on a current Node LTS (bookworm) and a matching -slim runtime stage', () => {
    expect(stages.length).toBe(3);
    const version = /NODE_VERSION=(\d+)/.exec(args(preamble, 'ARG').join(' '))?.[1];
    expect(Number(version) % 2).toBe(0);
    expect(Number(version)).toBeGreaterThanOrEqual(20);
    expect(args(build, 'FROM')[0]).toBe('node:${NODE_VERSION}-bookworm AS build');
    expect(args(runtime, 'FROM')[0]).toBe('node:${NODE_VERSION}-bookworm-slim AS runtime');
  });

  it('builds with libnftables-dev and the toolchain, compiles, then prunes dev dependencies', () => {
    for (const pkg of ['libnftables-dev', 'pkg-config', 'python3', 'make', 'g++']) expect(runs(build)).toContain(pkg);
    expect(runs(build)).toMatch(/npm ci\b/);
    expect(runs(build)).toContain('test -f packages/nftables-napi/build/Release/nftables_napi.node');
    expect(runs(build)).toContain('npm prune --omit=dev');
  });

  it('the runtime stage adds only libnftables1 and nft, and the built app', () => {
    const installed = /apt-get install -y --no-install-recommends ([^&]+)/.exec(runs(runtime))?.[1]?.trim().split(/\s+/);
    expect(installed).toEqual(['libnftables1', 'nftables']);
    expect(runs(runtime)).not.toMatch(/-dev\b|g\+\+|python3/);
    expect(args(runtime, 'COPY').every((c) => c.startsWith('--from=build'))).toBe(true);
  });

  it('runs the ami2ban CLI with `run`, checks readiness, stops on SIGTERM, keeps state on a volume, carries OCI labels', () => {
    expect(args(runtime, 'ENTRYPOINT')).toEqual(['["ami2ban"]']);
    expect(args(runtime, 'CMD')).toEqual(['["run"]']);
    expect(args(runtime, 'HEALTHCHECK')[0]).toMatch(/CMD \["ami2ban", "ready"\]$/);
    expect(args(runtime, 'STOPSIGNAL')).toEqual(['SIGTERM']);
    expect(args(runtime, 'VOLUME')).toEqual(['/var/lib/ami2ban']);
    const labels = args(runtime, 'LABEL').join(' ');
    for (const l of ['org.opencontainers.image.source', 'org.opencontainers.image.version', 'org.opencontainers.image.description']) expect(labels).toContain(l);
    expect(args(runtime, 'RUN').join(' ')).toContain('ln -s /app/bin/ami2ban.js /usr/local/bin/ami2ban');
    // root in the container, but only with NET_ADMIN (compose drops everything else); the reason is written down
    expect(args(runtime, 'USER')).toEqual([]);
    expect(read('Dockerfile')).toContain('a non-root user would not keep NET_ADMIN');
  });

  it('copies only paths that exist and that .dockerignore lets through', () => {
    const ignored = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    for (const c of args(build, 'COPY')) {
      const sources = c.split(/\s+/).slice(0, -1);
      for (const s of sources) {
        expect(existsSync(`${ROOT}${s}`), s).toBe(true);
        expect(ignored.some((i) => s.replace(/\/$/, '') === i.replace(/\/$/, '')), s).toBe(false);
      }
    }
    for (const small of ['.git', 'node_modules', 'dist', 'test', '.env']) expect(ignored).toContain(small);
  });

  it('the health check command exists in the CLI', () => {
    expect(read('src/cli.ts')).toMatch(/case 'ready':/);
    expect(existsSync(`${ROOT}bin/ami2ban.js`)).toBe(true);
  });
});

interface ComposeService {
  image?: string;
  build?: string;
  network_mode?: string;
  cap_drop?: string[];
  cap_add?: string[];
  env_file?: string | string[];
  volumes?: string[];
  restart?: string;
  depends_on?: Record<string, { condition?: string; restart?: boolean }>;
  environment?: Record<string, string>;
}

interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

function compose(file: string): Compose {
  return parse(read(file)) as Compose;
}

describe('docker-compose.yml (sidecar in Asterisk\'s network namespace)', () => {
  const c = compose('docker-compose.yml');
  const asterisk = c.services.asterisk ?? {};
  const ami2ban = c.services.ami2ban ?? {};

  it('asterisk: image from ASTERISK_IMAGE with a default, config mounted from config/asterisk/', () => {
    expect(asterisk.image).toMatch(/^\$\{ASTERISK_IMAGE:-[^}]+\}$/);
    expect(read('docker-compose.yml')).toMatch(/Any Asterisk 18\+ image works/);
    const mounts = (asterisk.volumes ?? []).map((v) => v.split(':')[0] ?? '');
    for (const f of ['manager.conf', 'manager.d', 'pjsip.conf', 'logger.conf']) expect(mounts).toContain(`./config/asterisk/${f}`);
    for (const m of mounts) expect(existsSync(`${ROOT}${m}`), m).toBe(true);
  });

  it('ami2ban: built here, shares Asterisk\'s namespace, only NET_ADMIN, .env, a state volume, restarts, after asterisk', () => {
    expect(ami2ban.build).toBe('.');
    expect(ami2ban.network_mode).toBe('service:asterisk');
    expect(ami2ban.cap_drop).toEqual(['ALL']);
    expect(ami2ban.cap_add).toEqual(['NET_ADMIN']);
    expect(ami2ban.env_file).toBe('.env');
    expect(ami2ban.restart).toBe('unless-stopped');
    expect(ami2ban.depends_on).toEqual({ asterisk: { condition: 'service_started', restart: true } });
    const state = (ami2ban.volumes ?? []).find((v) => v.endsWith(':/var/lib/ami2ban'));
    expect(state).toBeDefined();
    expect(Object.keys(c.volumes ?? {})).toContain(state?.split(':')[0]);
    expect(ami2ban.environment?.AMI_HOST).toBe('127.0.0.1');
  });

  it('the host-networking variant puts both on the host network with the same restrictions', () => {
    const h = compose('docker-compose.host.yml');
    expect(h.services.asterisk?.network_mode).toBe('host');
    expect(h.services.ami2ban?.network_mode).toBe('host');
    expect(h.services.ami2ban?.cap_drop).toEqual(['ALL']);
    expect(h.services.ami2ban?.cap_add).toEqual(['NET_ADMIN']);
    expect(h.services.ami2ban?.volumes?.some((v) => v.endsWith(':/var/lib/ami2ban'))).toBe(true);
  });
});

describe('config/', () => {
  const example = read('config/.env.example');
  const entries = [...example.matchAll(/^#?([A-Z][A-Z0-9_]+)=(.*)$/gm)].map((m) => ({ name: m[1] ?? '', value: m[2] ?? '', commented: m[0].startsWith('#') }));

  it('.env.example names every variable of the schema, and nothing else', () => {
    const names = entries.map((e) => e.name);
    expect(names.filter((n) => !VARIABLES.some((v) => v.name === n))).toEqual([]);
    expect(VARIABLES.map((v) => v.name).filter((n) => !names.includes(n))).toEqual([]);
  });

  it('.env.example shows each default, explains each variable, and leaves secrets empty', () => {
    for (const e of entries.filter((x) => !x.commented)) {
      const v = VARIABLES.find((x) => x.name === e.name);
      if (v?.secret === true) expect(e.value, e.name).toBe('');
      else if (e.name !== 'AMI_USERNAME') expect(e.value, e.name).toBe(v?.default ?? '');
      const line = example.split('\n').findIndex((l) => l.startsWith(`${e.name}=`));
      expect(example.split('\n')[line - 1], e.name).toMatch(/^#/);
    }
    expect(example).toMatch(/AMI_SECRET_FILE/);
    expect(example).toMatch(/Docker secrets/);
    for (const group of ['AMI', 'policy', 'firewall', 'control', 'logging']) expect(example).toMatch(new RegExp(`^# ---- ${group}`, 'm'));
  });

  it('.env.example is a valid configuration once the secret is filled in', () => {
    const env = Object.fromEntries(entries.filter((e) => !e.commented).map((e) => [e.name, e.value]));
    const c = loadConfig({ ...env, AMI_SECRET: 'x' });
    expect(c.ami.username).toBe('ami2ban');
  });

  it('the AMI user is least-privilege: read = security, no write class, loopback only', () => {
    const conf = read('config/asterisk/manager.d/ami2ban.conf');
    expect(conf).toMatch(/^\[ami2ban\]$/m);
    expect(conf).toMatch(/^read = security$/m);
    expect(conf).toMatch(/^write =\s*$/m);
    expect(conf).toMatch(/^deny = 0\.0\.0\.0\/0\.0\.0\.0$/m);
    expect(conf).toMatch(/^permit = 127\.0\.0\.1\/255\.255\.255\.255$/m);
    expect(conf).toMatch(/^secret = CHANGE-ME/m);
    expect(read('config/asterisk/manager.conf')).toMatch(/^#include "manager\.d\/\*\.conf"$/m);
    expect(read('config/asterisk/manager.conf')).toMatch(/^enabled = yes$/m);
  });
});

describe('README, the operator\'s manual', () => {
  const readme = read('README.md');
  it.each([
    'docker compose up -d',
    'docker compose exec ami2ban ami2ban status',
    'nft list table inet ami2ban',
    'scripts/image-smoke.sh',
    'endpoint_identifier_order',
    'anonymous',
    'allowguest',
    '## Differences from fail2ban',
    '## Troubleshooting',
    'read = security',
    'cap_drop',
  ])('covers %s', (text) => {
    expect(readme).toContain(text);
  });
});

describe('deploy/kubernetes/ami2ban-sidecar.yaml', () => {
  const docs = parseAllDocuments(read('deploy/kubernetes/ami2ban-sidecar.yaml')).map((d) => d.toJS() as { apiVersion: string; kind: string });
  const set = docs.find((d) => d.kind === 'StatefulSet') as unknown as StatefulSet;
  const pod = set.spec?.template.spec;
  const ami2ban = pod?.containers.find((c) => c.name === 'ami2ban');

  it('every object is valid against the Kubernetes API schema (kubernetes-models)', () => {
    expect(docs.map((d) => `${d.apiVersion} ${d.kind}`)).toEqual(['v1 ConfigMap', 'apps/v1 StatefulSet']);
    expect(() => { new ConfigMap(docs[0] as ConstructorParameters<typeof ConfigMap>[0]).validate(); }).not.toThrow();
    expect(() => { new StatefulSet(set).validate(); }).not.toThrow();
    // the check is real: a wrong type is refused
    const broken = structuredClone(set) as unknown as { spec: { replicas: unknown } };
    broken.spec.replicas = 'one';
    expect(() => { new StatefulSet(broken as ConstructorParameters<typeof StatefulSet>[0]).validate(); }).toThrow(/replicas/);
  });

  it('ami2ban shares the Asterisk pod (its network namespace) with only NET_ADMIN, reaches AMI on loopback, keeps its state', () => {
    expect(pod?.containers.map((c) => c.name)).toEqual(['asterisk', 'ami2ban']);
    expect(pod?.hostNetwork).toBeUndefined();
    const sc = ami2ban?.securityContext;
    expect(sc?.capabilities).toEqual({ drop: ['ALL'], add: ['NET_ADMIN'] });
    expect(sc?.privileged).toBe(false);
    expect(sc?.allowPrivilegeEscalation).toBe(false);
    expect(sc?.readOnlyRootFilesystem).toBe(true);
    const env = Object.fromEntries((ami2ban?.env ?? []).map((e) => [e.name, e.value]));
    expect(env.AMI_HOST).toBe('127.0.0.1');
    expect(env.AMI_SECRET).toBeUndefined();
    expect(env.AMI_SECRET_FILE).toBe('/run/secrets/ami2ban/secret');
    expect(ami2ban?.readinessProbe?.exec?.command).toEqual(['ami2ban', 'ready']);
    const mounts = new Map((ami2ban?.volumeMounts ?? []).map((m) => [m.mountPath, m.name]));
    expect(mounts.get('/var/lib/ami2ban')).toBe('state');
    expect(set.spec?.volumeClaimTemplates?.map((v) => v.metadata?.name)).toContain('state');
    expect(pod?.volumes?.find((v) => v.name === mounts.get('/run/secrets/ami2ban'))?.secret?.secretName).toBe('ami2ban-ami');
    // every variable it sets is one ami2ban knows
    for (const name of Object.keys(env)) expect(VARIABLES.some((v) => v.name === name), name).toBe(true);
  });
});

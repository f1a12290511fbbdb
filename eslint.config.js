import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'packages/*/build/**', 'packages/*/dist/**', 'reports/**', 'bin/**'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  // The rooms of docs/ARCHITECTURE.md: what each folder of src/ may import.
  ...Object.entries({
    engine: ['ami', 'config', 'control', 'firewall', 'fleet', 'log', 'service', 'store', 'errors.js'],
    ami: ['config', 'control', 'engine', 'firewall', 'fleet', 'service', 'store'],
    firewall: ['ami', 'config', 'control', 'engine', 'fleet', 'service', 'store'],
    config: ['ami', 'control', 'engine', 'firewall', 'fleet', 'log', 'service', 'store'],
    store: ['ami', 'common', 'config', 'control', 'engine', 'firewall', 'fleet', 'log', 'service'],
    control: ['ami', 'common', 'config', 'engine', 'firewall', 'fleet', 'log', 'service', 'store'],
    fleet: ['ami', 'config', 'control', 'engine', 'firewall', 'service', 'store'],
    common: ['ami', 'config', 'control', 'engine', 'firewall', 'fleet', 'log', 'service', 'store', 'errors.js'],
  }).map(([room, forbidden]) => ({
    files: [`src/${room}/**/*.ts`],
    rules: {
      'no-restricted-imports': ['error', { patterns: forbidden.map((f) => ({ group: [`../${f}`, `../${f}/*`], message: `src/${room} may not import src/${f} (docs/ARCHITECTURE.md)` })) }],
    },
  })),
  { files: ['eslint.config.js', '**/*.cjs'], ...tseslint.configs.disableTypeChecked },
  { files: ['**/*.cjs'], languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', process: 'readonly', console: 'readonly', __dirname: 'readonly' } } },
);

import type { CodegenConfig } from '@graphql-codegen/cli';

// The SPA's operation types, generated from the service's schema (schema.graphql at the
// repository root, kept equal to `python -m app export-schema` by a test). Every `graphql(...)`
// document in src/ is validated against it: `npm run build` fails on a field, argument or type
// the schema does not have, and tsc on a use of a result that does not match.
const config: CodegenConfig = {
  schema: '../schema.graphql',
  documents: ['src/**/*.{ts,tsx}', '!src/gql/**'],
  ignoreNoDocuments: false,
  errorsOnly: true,
  generates: {
    'src/gql/': {
      preset: 'client',
      presetConfig: { fragmentMasking: false },
      config: {
        useTypeImports: true,
        enumsAsTypes: true,
        strictScalars: true,
        scalars: { Date: 'string', DateTime: 'string', JSON: 'Record<string, unknown>' },
      },
    },
  },
};

export default config;

// GraphiQL for this service, bundled with everything it needs (React, Monaco and its workers, the
// explorer plugin, graphql-ws): the page loads nothing from any other host.

import 'graphiql/setup-workers/vite';
import 'graphiql/style.css';
import '@graphiql/plugin-explorer/style.css';
import './style.css';

import { explorerPlugin } from '@graphiql/plugin-explorer';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { GraphiQL } from 'graphiql';
import { createRoot } from 'react-dom/client';

import { EXAMPLES } from './examples';

// The page is served by GET on the GraphQL endpoint itself: its own address is the endpoint, for
// HTTP and (as ws: or wss:) for websockets, behind any proxy that keeps the path.
const endpoint = new URL(window.location.pathname, window.location.origin);
const socket = new URL(endpoint);
socket.protocol = endpoint.protocol === 'https:' ? 'wss:' : 'ws:';

// Queries and mutations are POSTed with the headers editor's headers. A subscription opens its
// own graphql-ws socket whose connection_init payload is those same headers, so a token pasted as
// {"Authorization": "Bearer …"} authenticates both (the service reads `Authorization` there).
const fetcher = createGraphiQLFetcher({
  url: endpoint.href,
  subscriptionUrl: socket.href,
  enableIncrementalDelivery: false, // no @defer / @stream here: plain JSON answers
});

const root = document.getElementById('graphiql');
if (root === null) throw new Error('index.html has no #graphiql element');
createRoot(root).render(
  <GraphiQL
    fetcher={fetcher}
    plugins={[explorerPlugin()]}
    defaultQuery={EXAMPLES}
    isHeadersEditorEnabled
    shouldPersistHeaders={false}
  />,
);

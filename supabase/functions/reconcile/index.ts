// Reconciliation with the providers, run daily by cron (yesterday's window) with the shared secret
// RESERVE_CRON_SECRET, and on demand for {provider, from, to}.
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("reconcile", handler);

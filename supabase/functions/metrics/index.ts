// Prometheus metrics, scraped with Authorization: Bearer <RESERVE_METRICS_TOKEN>.
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("metrics", handler);

// Alert evaluation and delivery, run every minute by cron with the shared secret RESERVE_CRON_SECRET.
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("notify", handler);

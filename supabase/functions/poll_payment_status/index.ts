// The poller, run every 5 minutes by cron with the shared secret RESERVE_CRON_SECRET.
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("poll_payment_status", handler);

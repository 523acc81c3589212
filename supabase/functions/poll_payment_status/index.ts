// The poller, run every 5 minutes by cron with the shared secret RESERVE_CRON_SECRET.
import { handler } from "./handler.ts";

Deno.serve(handler);

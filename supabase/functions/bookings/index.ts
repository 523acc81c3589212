// A signed-in guest reads their own bookings: GET /bookings (newest first, paginated), GET /bookings/<id>.
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("bookings", handler);

// Starts a guest's payment: nights held, attempt recorded, provider payment created.
import { serveFunction } from "../_shared/serve.ts";
import { handler } from "./handler.ts";

serveFunction("checkout", handler);

// The guest's page of the browser test: a web app on its own origin that books with supabase-js and the
// typed client, as an app would. What it reaches is in #status's data attributes, for the test to read.
import { createClient } from "@supabase/supabase-js";
import { reserveClient, type ReserveError } from "../../../client/reserve_client.ts";

const params = new URLSearchParams(location.hash.slice(1));
const status = document.getElementById("status")!;

function show(state: string, fields: Record<string, string> = {}, text = state) {
  status.dataset.state = state;
  for (const [k, v] of Object.entries(fields)) status.dataset[k] = v;
  status.textContent = text;
}

function fail(error: ReserveError) {
  show("error", { code: error.code, field: error.field ?? "" }, `${error.code}: ${error.message}`);
}

async function book() {
  const token = params.get("token")!;
  const supabase = createClient(params.get("url")!, params.get("anon")!, { accessToken: async () => token });
  const reserve = reserveClient(supabase, { region: params.get("region") ?? undefined });
  const started = performance.now();
  const checkout = await reserve.checkout({
    unit_id: params.get("unit")!, check_in: params.get("in")!, check_out: params.get("out")!, guests: 2, method: "card",
  });
  if (checkout.error) return fail(checkout.error);
  show("awaiting_payment", { bookingIntentId: checkout.data.booking_intent_id, gateway: checkout.data.gateway_payment_id },
    `Pay ${(checkout.data.amount / 100).toFixed(2)} ${checkout.data.currency}`);
  const done = await reserve.waitForBooking(checkout.data.booking_intent_id, { intervalMs: 50, timeoutMs: 30_000 });
  if (done.error) return fail(done.error);
  const b = done.data;
  show(b.state, { confirmationCode: b.confirmation_code ?? "", ms: String(Math.round(performance.now() - started)) },
    `${b.state}: ${b.confirmation_code ?? ""} ${b.unit.name}, ${b.city.name}, ${b.check_in} to ${b.check_out}`);
}

book().catch((err) => show("error", { code: "thrown" }, String(err)));

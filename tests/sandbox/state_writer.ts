// A sandbox that keeps taking payments until it is killed: the child process of the crash test in
// state.test.ts (node --import tsx tests/sandbox/state_writer.ts <stateDir>).
import { startProviderSandbox } from "../../local/sandbox/index.ts";

const sb = await startProviderSandbox({ stateDir: process.argv[2]! });
process.stdout.write(`ready ${sb.url}\n`);
for (let i = 0; ; i++) {
  const [id] = sb.control.seedStripePaymentIntents(1, { status: "requires_payment_method", amount: 10_000 + i });
  sb.control.stripeConfirm(id!, "succeeded");
  sb.control.seedMercadoPagoPayments(2, { status: "approved", transaction_amount: 100 });
  await new Promise((r) => setTimeout(r, 2));
}

/**
 * `aegir/chai` for the interface-blockstore-tests suite (test/ipfs-blockstore.test.ts), which
 * imports it from aegir, the IPFS projects' build tool, not installed here: vitest.config.ts
 * aliases the import to this file. aegir's is chai with chai-as-promised and chai-parentheses
 * (and chai-subset, sinon-chai); the suite needs two of their assertions, written out here in
 * their smallest form rather than installing the plugins:
 *
 * - `expect(promise).to.eventually...` (chai-as-promised): the chain after `eventually` is
 *   recorded and, when awaited, replayed on `expect(value)` once the promise settles;
 *   `.rejected` right after it (or `expect(promise).to.be.rejected`) asserts a rejection and
 *   continues with the reason, `.fulfilled` a fulfillment. Flags set before `eventually` (`not`,
 *   `deep`) carry over. It touches nothing else of chai: a chai-as-promised that wraps every
 *   assertion would also wrap vitest's own `expect`, which shares this chai.
 * - `.ok()`, `.true()`, `.false()`, ... (chai-parentheses): these properties also become
 *   callable (the assertion runs on access, as before; the call does nothing).
 *
 * test/ipfs-blockstore.test.ts checks that failing assertions of both kinds do fail.
 */
import * as chai from 'chai';

type Step = { get: PropertyKey } | { call: unknown[] };
/** chai's language chains: words that assert nothing. */
const CHAINS = new Set<PropertyKey>(['to', 'be', 'been', 'is', 'that', 'which', 'and', 'has', 'have', 'with', 'at', 'of', 'same', 'but', 'does', 'still', 'also']);
// Chai's assertion objects are dynamic: typed loosely here, as chai's own plugins are.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

chai.use((api, utils) => {
  const { Assertion } = api;

  /** A chain recorded after `eventually`, replayed when awaited. */
  const recorder = (source: Any, promise: PromiseLike<unknown>, steps: Step[]): Any => {
    let run: Promise<unknown> | undefined; // replayed once, when first awaited (not when `then` is only looked at)
    return new Proxy(function recorded() {}, {
      get(_target, name) {
        if (name === 'then' || name === 'catch' || name === 'finally') {
          return (...args: Any[]) => ((run ??= replay(source, promise, steps)) as Any)[name](...args);
        }
        if (typeof name === 'symbol') return undefined;
        return recorder(source, promise, [...steps, { get: name }]);
      },
      apply(_target, _this, args) {
        return recorder(source, promise, [...steps, { call: args }]);
      },
    });
  };

  const replay = async (source: Any, promise: PromiseLike<unknown>, steps: Step[]): Promise<unknown> => {
    const negate = utils.flag(source, 'negate') === true;
    let value: unknown;
    // `rejected`/`fulfilled` may follow language chains: `eventually.be.rejected`.
    let i = 0;
    while (i < steps.length && CHAINS.has((steps[i] as { get?: PropertyKey }).get!)) i++;
    const first = steps[i];
    const settles = first !== undefined && 'get' in first && (first.get === 'rejected' || first.get === 'fulfilled');
    if (settles) {
      i++;
      let outcome: { ok: true; value: unknown } | { ok: false; reason: unknown };
      try {
        outcome = { ok: true, value: await promise };
      } catch (reason) {
        outcome = { ok: false, reason };
      }
      const wantRejected = (first.get === 'rejected') !== negate;
      if (wantRejected && outcome.ok) throw new chai.AssertionError(`expected promise to be rejected but it was fulfilled with ${utils.inspect(outcome.value)}`);
      if (!wantRejected && !outcome.ok) throw new chai.AssertionError(`expected promise to be fulfilled but it was rejected with ${utils.inspect(outcome.reason)}`);
      value = outcome.ok ? outcome.value : outcome.reason;
    } else {
      i = 0;
      value = await promise;
    }
    // The settled value takes the promise's place, with the flags set before `eventually`.
    const assertion: Any = new Assertion(value);
    utils.transferFlags(source, assertion, false);
    if (settles) utils.flag(assertion, 'negate', false); // `not` was spent on rejected/fulfilled
    let holder: Any = assertion;
    let current: Any = assertion;
    for (; i < steps.length; i++) {
      const step = steps[i]!;
      if ('get' in step) {
        holder = current;
        current = current[step.get];
      } else {
        current = Reflect.apply(current, holder, step.call);
        holder = current;
      }
    }
    return value;
  };

  Assertion.addProperty('eventually', function (this: Any) {
    const promise = utils.flag(this, 'object');
    if (typeof promise?.then !== 'function') throw new TypeError('eventually needs a promise');
    return recorder(this, promise, []);
  });
  for (const name of ['rejected', 'fulfilled']) {
    Assertion.addProperty(name, function (this: Any) {
      const promise = utils.flag(this, 'object');
      if (typeof promise?.then !== 'function') throw new TypeError(`${name} needs a promise`);
      return recorder(this, promise, [{ get: name }]);
    });
  }

  for (const name of ['ok', 'true', 'false', 'null', 'undefined', 'NaN', 'exist', 'empty', 'arguments', 'extensible', 'sealed', 'frozen', 'finite']) {
    const getter = Object.getOwnPropertyDescriptor(Assertion.prototype, name)?.get;
    if (!getter || (Assertion.prototype as Any).__methods?.[name]) continue;
    Assertion.addChainableMethod(name, function () {}, function (this: Any) {
      getter.call(this);
    });
  }
});

/** chai's expect, typed loosely: its types know neither `eventually` nor `ok()`. */
export const expect: (value: unknown, message?: string) => Any = chai.expect;
export const assert = chai.assert;

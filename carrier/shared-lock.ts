/**
 * A shared/exclusive lock for async work: any number of shared holders at once, or one exclusive
 * holder. A waiting exclusive request goes before shared requests that arrive after it, so a
 * steady flow of shared work cannot starve it. (No well-kept npm package offers this for
 * promises; async-mutex has mutexes and weighted semaphores only.)
 */
export class SharedLock {
  #shared = 0;
  #exclusive = false;
  #exclusiveWaiting = 0;
  #waiters: Array<() => void> = [];

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#exclusive || this.#exclusiveWaiting > 0) await this.#wait();
    this.#shared++;
    try {
      return await fn();
    } finally {
      this.#shared--;
      this.#wake();
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.#exclusiveWaiting++;
    try {
      while (this.#exclusive || this.#shared > 0) await this.#wait();
    } finally {
      this.#exclusiveWaiting--;
    }
    this.#exclusive = true;
    try {
      return await fn();
    } finally {
      this.#exclusive = false;
      this.#wake();
    }
  }

  #wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const resolve of waiters) resolve();
  }
}

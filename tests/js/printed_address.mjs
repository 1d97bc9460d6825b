// Loaded with `node --import` before a README example: the examples name the address of
// `make run`, http://127.0.0.1:5282; this sends their requests to the test's server
// (STREAMCHAT_TEST_URL) instead, so the examples themselves run exactly as printed.
const printed = 'http://127.0.0.1:5282';
const target = process.env.STREAMCHAT_TEST_URL;
const realFetch = globalThis.fetch;

globalThis.fetch = (input, init) => {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  if (!url.startsWith(printed)) {
    return Promise.reject(new Error(`the example fetched ${url}, not the printed address`));
  }
  return realFetch(target + url.slice(printed.length), init);
};

// The shop's storefront and admin console: a framework-free single-page app served by the gateway.
// The page's Content-Security-Policy forbids inline code, so every handler is attached here,
// and API data reaches the page only through DOM nodes and textContent, never as HTML.
'use strict';

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

  const STORE = {
    cart: 'shop.cart', // localStorage: { sku: quantity }
    pendingOrder: 'shop.pendingOrder', // localStorage: { key, body } of an order not yet confirmed
    refresh: 'shop.refreshToken', // sessionStorage: this tab only, gone when the tab closes
    login: 'shop.login', // sessionStorage: PKCE verifier, state and nonce while the user is at the issuer
  };
  const CATALOG_PAGE_SIZE = 12;
  const ORDERS_PAGE_SIZE = 10;
  const ADMIN_PAGE_SIZE = 20;
  const MAX_LINE_QUANTITY = 1000;
  const LOW_STOCK_SHOWN = 5; // "Only 3 left" at or under this many
  const VIEWS = ['catalog', 'product', 'cart', 'orders', 'admin'];
  const ADMIN_TABS = ['products', 'stock', 'orders', 'deadletters', 'events', 'flags'];
  const TITLES = { catalog: 'Catalog', cart: 'Cart', orders: 'My orders', admin: 'Admin' };
  const COUNTRIES = [['AT', 'Austria'], ['AU', 'Australia'], ['BE', 'Belgium'], ['CA', 'Canada'], ['CH', 'Switzerland'],
    ['DE', 'Germany'], ['DK', 'Denmark'], ['ES', 'Spain'], ['FI', 'Finland'], ['FR', 'France'], ['GB', 'United Kingdom'],
    ['IE', 'Ireland'], ['IT', 'Italy'], ['JP', 'Japan'], ['NL', 'Netherlands'], ['NO', 'Norway'], ['NZ', 'New Zealand'],
    ['PL', 'Poland'], ['PT', 'Portugal'], ['SE', 'Sweden'], ['US', 'United States']];

  const state = {
    config: null, // /storefront/config.json
    oidc: null, // the issuer's discovery document
    started: null, // settles once configuration and discovery are loaded (or failed)
    session: null, // { accessToken, idToken, expiresAt, claims, profile }: in memory only
    refreshing: null, // the refresh in flight, shared by every caller that needs a token
    refreshTimer: 0,
    route: { view: 'catalog', arg: '', params: new URLSearchParams() },
    products: new Map(), // sku -> product, for names, pictures and prices
    levels: new Map(), // sku -> units available, as last seen
    productRequest: 0, // drops answers for a product page the user already left
    admin: { editing: null, deadLetter: null, eventsTimer: 0 },
  };

  // --- small helpers ----------------------------------------------------------------------------

  /** An element with attributes ("text" sets textContent, "class" the class) and children (strings become text). */
  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === 'text') node.textContent = String(value);
      else if (name === 'class') node.className = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    node.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
    return node;
  }

  function button(text, onClick, { kind = '', label = '' } = {}) {
    const node = el('button', { type: 'button', class: kind, text, 'aria-label': label || null });
    node.addEventListener('click', onClick);
    return node;
  }

  function money(amount, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: 'currency', currency: currency || 'USD' }).format(amount);
    } catch {
      return `${Number(amount).toFixed(2)} ${currency || ''}`.trim();
    }
  }

  /** "accessories" -> "Accessories", "smart-home" -> "Smart home": the same label on cards and in the filter. */
  const categoryLabel = (category) => {
    const text = String(category || '').replace(/-/g, ' ');
    return text.charAt(0).toUpperCase() + text.slice(1);
  };

  const when = (iso) => (iso ? new Date(iso).toLocaleString() : '');
  const productName = (sku) => state.products.get(sku)?.name || sku;
  const plural = (count, one, many = `${one}s`) => `${count} ${count === 1 ? one : many}`;

  function base64url(bytes) {
    let binary = '';
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  const randomString = (byteCount) => base64url(crypto.getRandomValues(new Uint8Array(byteCount)));

  /** The payload of a JWT, for display only: the gateway verifies tokens, the browser need not. */
  function jwtClaims(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const bytes = Uint8Array.from(atob(part + '='.repeat((4 - (part.length % 4)) % 4)), (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      return {};
    }
  }

  function parseJson(text, fallback = null) {
    try {
      return JSON.parse(text) ?? fallback;
    } catch {
      return fallback;
    }
  }

  const readJson = (storage, key, fallback) => parseJson(storage.getItem(key), fallback);

  async function getJson(url) {
    const response = await fetch(url, { headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(`${url} answered ${response.status}`);
    return response.json();
  }

  // --- notices: one at a time, in view, in plain words ------------------------------------------------

  function notify(text, { signIn = false, error = false } = {}) {
    $('#notice-text').textContent = text;
    $('#notice-sign-in').hidden = !signIn || Boolean(state.session);
    $('#notice').classList.toggle('error', error);
    $('#notice').setAttribute('role', error ? 'alert' : 'status');
    $('#notice').hidden = false;
    clearTimeout(notify.timer);
    if (!error && !signIn) notify.timer = setTimeout(() => ($('#notice').hidden = true), 6000);
  }

  /** An API answer other than 2xx (status 0: no answer at all), with its problem document. */
  class ApiError extends Error {
    constructor(status, problem, retryAfter = null) {
      super(problem.detail || problem.title || `The request failed (${status}).`);
      Object.assign(this, { status, problem, retryAfter });
    }
  }

  /** Retry-After is either seconds or an HTTP date. */
  function retryText(value) {
    if (!value) return ' Please try again in a moment.';
    const seconds = /^\d+$/.test(value) ? Number(value) : Math.ceil((Date.parse(value) - Date.now()) / 1000);
    if (!Number.isFinite(seconds)) return ' Please try again in a moment.';
    const wait = Math.max(1, seconds);
    return ` Please try again in ${plural(wait, 'second')}.`;
  }

  /** What went wrong, for a person: product names, not SKUs; plain words, not the API's. */
  function describe(error, doing = '') {
    if (!(error instanceof ApiError)) return error.message || 'Something went wrong.';
    const { status, problem } = error;
    const type = String(problem.type || '').split('/').pop();
    const nothing = doing ? ` Nothing was ${doing}.` : '';
    if (status === 0) return 'The shop could not be reached. Check your connection and try again.';
    if (status === 401) return 'Please sign in to continue.';
    if (status === 403) return 'Your account may not do this.';
    if (type === 'insufficient-stock' && Array.isArray(problem.shortages)) {
      const short = problem.shortages.map(({ skuCode, available }) =>
        available > 0 ? `only ${available} × ${productName(skuCode)} left` : `${productName(skuCode)} is sold out`);
      return `Not enough stock: ${short.join(', ')}.${nothing}`;
    }
    if (type === 'unknown-product' || type === 'unknown-sku') {
      const skus = (problem.errors || []).map((e) => /'([^']+)'/.exec(e.message)?.[1]).filter(Boolean);
      const names = skus.length ? skus.map(productName).join(', ') : 'A product';
      return `${names} ${skus.length > 1 ? 'are' : 'is'} no longer for sale.${nothing}`;
    }
    if (type === 'idempotency-key-in-flight') return 'Your order is still being placed. Please wait a moment.';
    if (status === 429) return `Too many requests at once.${retryText(error.retryAfter)}`;
    if (status === 503 || status === 504 || status === 502) {
      return `The shop is busy right now.${nothing}${retryText(error.retryAfter)}`;
    }
    if (status === 400) return 'Please check the highlighted fields.';
    if (status === 404) return 'It is not there any more. Please reload the page.';
    if (status === 409) return `It changed meanwhile. Please reload and try again.${nothing}`;
    if (status >= 500) return `Something went wrong on our side.${nothing} Please try again.`;
    // Anything else: the API's own words, with product names for SKUs.
    return String(error.message).replace(/\b[a-z0-9_-]{2,64}\b/g, (word) => state.products.get(word)?.name || word);
  }

  /** A problem's field ("/items/0/quantity", or a bare query parameter name) as a data-field value. */
  function fieldName(field, message) {
    const name = String(field || '').replace(/^\//, '').replace(/~1/g, '/').replace(/~0/g, '~');
    // The gateway reports a missing property at its parent and names it only in the message.
    const missing = /^'([^']+)' is a required property/.exec(message || '');
    if (missing) return name ? `${name}/${missing[1]}` : missing[1];
    return name;
  }

  function clearErrors(form) {
    for (const node of form.querySelectorAll('.field-error')) node.remove();
    for (const node of form.querySelectorAll('[aria-invalid]')) {
      node.removeAttribute('aria-invalid');
      node.removeAttribute('aria-describedby');
    }
    const summary = form.querySelector('[data-form-error]');
    if (summary) summary.textContent = '';
  }

  /** Shows a message right after the field it is about, linked to it for assistive technology. */
  function markField(target, message) {
    const id = `${target.id}-error`;
    let note = document.getElementById(id);
    if (!note) target.after((note = el('p', { class: 'field-error', id })));
    note.textContent = message;
    target.setAttribute('aria-invalid', 'true');
    target.setAttribute('aria-describedby', id);
  }

  /** Shows an error: in the form's summary and by each field it names, else in the notice. */
  function report(error, form = null, doing = '') {
    if (!(error instanceof ApiError)) console.error(error);
    const text = describe(error, doing);
    const summary = form && form.querySelector('[data-form-error]');
    if (form) {
      clearErrors(form);
      for (const { field, message } of error.problem?.errors || []) {
        const name = fieldName(field, message);
        const target = name && form.querySelector(`[data-field="${CSS.escape(name)}"]`);
        if (target) markField(target, target.dataset.message || 'This value is not valid.');
      }
      if (summary) summary.textContent = text;
    }
    if (error.status === 401) notify(text, { signIn: true, error: true });
    else if (summary) $('#notice').hidden = true; // the form says it; an old notice must not contradict it
    else notify(text, { error: true });
  }

  /** Checks a form against its HTML constraints first, showing messages the same way as the API's. */
  function validForm(form) {
    clearErrors(form);
    const invalid = [...form.elements].filter((input) => input.willValidate && !input.checkValidity());
    for (const input of invalid) markField(input, input.dataset.message || input.validationMessage);
    invalid[0]?.focus();
    if (invalid.length) form.querySelector('[data-form-error]').textContent = 'Please check the highlighted fields.';
    return invalid.length === 0;
  }

  // --- the API --------------------------------------------------------------------------------------

  /** Calls the gateway. Paths are written in full, from /api on (tests check them), and rebased on config.api. */
  async function api(path, { method = 'GET', body, auth = false, headers = {} } = {}) {
    const url = state.config.api.replace(/\/$/, '') + path.replace(/^\/api/, '');
    const send = async () => {
      const sent = { Accept: 'application/json, application/problem+json', ...headers };
      if (body !== undefined) sent['Content-Type'] = 'application/json';
      if (auth) {
        const token = await accessToken();
        if (!token) throw new ApiError(401, { title: 'Unauthorized', detail: 'You are not signed in.' });
        sent.Authorization = `Bearer ${token}`;
      }
      try {
        return await fetch(url, { method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body) });
      } catch {
        throw new ApiError(0, { detail: 'The shop could not be reached.' });
      }
    };
    let response = await send();
    // A token can be refused before it expires (session ended, keys rotated): one retry with a fresh one.
    if (response.status === 401 && auth && (await refresh())) response = await send();
    const text = await response.text();
    const data = text ? parseJson(text) : null;
    if (response.ok) return withEtag(data, response);
    const problem = data && typeof data === 'object' ? data : { detail: text || response.statusText };
    throw new ApiError(response.status, problem, response.headers.get('Retry-After'));
  }

  /** Keeps a response's ETag on the object it describes (a product being edited sends it back as If-Match). */
  function withEtag(data, response) {
    const etag = response.headers.get('ETag');
    if (etag && data && typeof data === 'object' && !Array.isArray(data)) {
      Object.defineProperty(data, 'etag', { value: etag, enumerable: false });
    }
    return data;
  }

  /** The local runtime's own endpoints (fault flags, event flow); null where they do not exist (a cluster). */
  async function local(path, { method = 'GET', body } = {}) {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: { Accept: 'application/json', ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, { detail: 'The shop could not be reached.' });
    }
    if (response.status === 404 && method === 'GET') return null;
    const data = parseJson(await response.text());
    if (!response.ok) throw new ApiError(response.status, data || {}, response.headers.get('Retry-After'));
    return data;
  }

  // --- sign-in: authorization code flow with PKCE ------------------------------------------------------

  const redirectUri = () => `${location.origin}/`;

  async function signIn() {
    await state.started?.catch(() => {}); // a click during start-up waits for the issuer's discovery document
    if (!state.oidc) {
      notify('Signing in is not possible right now. Please try again later.', { error: true });
      return;
    }
    const verifier = randomString(48); // 64 characters, within RFC 7636's 43..128
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
    const login = { verifier, state: randomString(16), nonce: randomString(16), hash: location.hash };
    sessionStorage.setItem(STORE.login, JSON.stringify(login));
    const url = new URL(state.oidc.authorization_endpoint);
    url.search = new URLSearchParams({ response_type: 'code', client_id: state.config.clientId,
      redirect_uri: redirectUri(), scope: 'openid profile email', state: login.state, nonce: login.nonce,
      code_challenge: base64url(new Uint8Array(digest)), code_challenge_method: 'S256' }).toString();
    location.assign(url.toString());
  }

  /** Back from the issuer with ?code=&state= (or ?error=): check it, exchange the code, clean the URL. */
  async function completeSignIn(params) {
    const login = readJson(sessionStorage, STORE.login, null);
    sessionStorage.removeItem(STORE.login);
    history.replaceState(null, '', `/${login?.hash || ''}`); // the code must not stay in the URL or history
    const refused = params.get('error_description') || params.get('error');
    if (refused) throw new Error(`Signing in did not work: ${refused}.`);
    if (!login || params.get('state') !== login.state) {
      throw new Error('Signing in did not work: that answer does not belong to a sign-in started here. Please try again.');
    }
    if (params.has('iss') && params.get('iss') !== state.oidc.issuer) {
      throw new Error('Signing in did not work: the answer came from an unexpected server.'); // RFC 9207 mix-up defence
    }
    const tokens = await tokenRequest({ grant_type: 'authorization_code', code: params.get('code'),
      redirect_uri: redirectUri(), client_id: state.config.clientId, code_verifier: login.verifier });
    if (tokens.id_token && jwtClaims(tokens.id_token).nonce !== login.nonce) {
      throw new Error('Signing in did not work: the answer does not match this sign-in. Please try again.');
    }
    keepTokens(tokens);
  }

  async function tokenRequest(form) {
    const headers = { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' };
    let response;
    try {
      response = await fetch(state.oidc.token_endpoint, { method: 'POST', headers, body: new URLSearchParams(form) });
    } catch {
      throw Object.assign(new Error('The sign-in server could not be reached.'), { transient: true });
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(`Signing in did not work: ${body.error_description || body.error || response.status}.`);
      throw Object.assign(error, { transient: response.status >= 500 });
    }
    return body;
  }

  function keepTokens(tokens) {
    const idToken = tokens.id_token || state.session?.idToken || null;
    const claims = jwtClaims(tokens.access_token);
    const lifetime = Number(tokens.expires_in) || 60;
    // Expiry from expires_in, not the token's exp: the browser's clock may be off.
    const expiresAt = Date.now() + lifetime * 1000;
    const profile = idToken ? jwtClaims(idToken) : claims;
    state.session = { accessToken: tokens.access_token, idToken, expiresAt, claims, profile };
    // The issuer may rotate refresh tokens (each works once): always keep the newest.
    if (tokens.refresh_token) sessionStorage.setItem(STORE.refresh, tokens.refresh_token);
    // Refresh ahead of expiry: a fifth of the lifetime early, at most a minute.
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refresh, Math.max(lifetime * 1000 - Math.min(60, lifetime / 5) * 1000, 1000));
    renderAccount();
  }

  /** Uses the refresh token; true when a new access token is in memory. Concurrent callers share one request. */
  function refresh() {
    const refreshToken = sessionStorage.getItem(STORE.refresh);
    if (!refreshToken || !state.oidc) return Promise.resolve(false);
    const form = { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: state.config.clientId };
    state.refreshing ??= (async () => {
      try {
        keepTokens(await tokenRequest(form));
        return true;
      } catch (error) {
        if (error.transient) state.refreshTimer = setTimeout(refresh, 15000); // the issuer may be back soon
        else forgetTokens('Your session has ended. Please sign in again.');
        return false;
      } finally {
        state.refreshing = null;
      }
    })();
    return state.refreshing;
  }

  /** A usable access token, refreshed when about to expire; null when signed out. */
  async function accessToken() {
    if (state.session && state.session.expiresAt - Date.now() > 10000) return state.session.accessToken;
    return (await refresh()) ? state.session.accessToken : null;
  }

  function forgetTokens(why = '') {
    clearTimeout(state.refreshTimer);
    state.session = null;
    sessionStorage.removeItem(STORE.refresh);
    renderAccount();
    if (why) notify(why, { signIn: true });
  }

  function signOut() {
    const idToken = state.session?.idToken;
    forgetTokens();
    const endSession = state.oidc?.end_session_endpoint;
    if (!endSession) {
      notify('You are signed out.');
      route();
      return;
    }
    // End the issuer's session too; it sends the browser back here.
    const params = { client_id: state.config.clientId, post_logout_redirect_uri: redirectUri() };
    if (idToken) params.id_token_hint = idToken;
    const url = new URL(endSession);
    url.search = new URLSearchParams(params).toString();
    location.assign(url.toString());
  }

  const roles = () => state.session?.claims.realm_access?.roles ?? [];
  const isAdmin = () => roles().includes('admin');

  /** The header names who is signed in; the realm's roles are not the shopper's business. */
  function renderAccount() {
    const profile = state.session?.profile ?? {};
    $('#user-name').hidden = !state.session;
    $('#user-name').textContent = profile.name || profile.preferred_username || profile.email || '';
    $('#sign-in').hidden = Boolean(state.session);
    $('#sign-out').hidden = !state.session;
    $('#admin-nav').hidden = !isAdmin();
    if (state.session) $('#notice-sign-in').hidden = true;
    prefillCheckout();
  }

  // --- catalog -------------------------------------------------------------------------------------------

  function catalogQuery() {
    const params = state.route.params;
    const page = Math.max(0, Number.parseInt(params.get('page') || '1', 10) - 1 || 0);
    const sort = ['name', '-name', 'price', '-price'].includes(params.get('sort')) ? params.get('sort') : 'name';
    return { q: params.get('q') || '', category: params.get('category') || '', sort, page };
  }

  /** Search, filter, sort and page live in the URL (#/catalog?q=..&category=..&sort=..&page=2): reload keeps them. */
  function goCatalog(changes) {
    const query = { ...catalogQuery(), ...changes };
    const params = new URLSearchParams();
    if (query.q) params.set('q', query.q);
    if (query.category) params.set('category', query.category);
    if (query.sort !== 'name') params.set('sort', query.sort);
    if (query.page > 0) params.set('page', String(query.page + 1));
    const text = params.toString();
    location.hash = `#/catalog${text ? `?${text}` : ''}`;
  }

  async function loadCatalog() {
    const { q, category, sort, page } = catalogQuery();
    $('#q').value = q;
    $('#sort').value = sort;
    if ([...$('#category').options].some((option) => option.value === category)) $('#category').value = category;
    const params = new URLSearchParams({ sort, page: String(page), size: String(CATALOG_PAGE_SIZE) });
    if (q) params.set('q', q); // empty filters are left out: the API validates every parameter it gets
    if (category) params.set('category', category);
    const query = params.toString();
    const list = $('#product-list');
    list.setAttribute('aria-busy', 'true');
    document.title = q ? `“${q}” · Catalog · Shop` : category ? `${categoryLabel(category)} · Shop` : 'Catalog · Shop';
    try {
      renderProducts(await api(`/api/products?${query}`), { q, category });
      clearErrors($('#search-form'));
    } catch (error) {
      report(error, $('#search-form'));
    } finally {
      list.removeAttribute('aria-busy');
    }
  }

  function picture(product, className = '') {
    if (!product.image) return el('span', { class: `${className} no-picture`, 'aria-hidden': 'true' });
    return el('img', { class: className, src: product.image, alt: '', loading: 'lazy', width: 400, height: 300 });
  }

  function renderProducts(result, { q, category }) {
    const cards = result.items.map((product) => {
      state.products.set(product.sku, product);
      const add = el('button', { type: 'button', class: 'secondary', text: 'Add to cart',
        'aria-label': `Add ${product.name} to the cart` });
      add.addEventListener('click', () => addToCart(product.sku, 1));
      const href = `#/product/${encodeURIComponent(product.sku)}`;
      return el('li', {}, el('article', { class: 'card product-card', 'data-sku': product.sku },
        el('a', { class: 'picture', href, tabindex: -1, 'aria-hidden': 'true' }, picture(product)),
        el('div', { class: 'body' },
          el('h2', { title: product.name }, el('a', { href, text: product.name })),
          el('p', { class: 'category', text: categoryLabel(product.category) }),
          el('p', { class: 'price', text: money(product.price, product.currency) }),
          add)));
    });
    $('#product-list').replaceChildren(...cards);
    const total = result.totalItems;
    const filtered = q || category;
    $('#catalog-summary').textContent = total ? plural(total, 'product') : filtered ? 'No products match.' : 'No products yet.';
    renderPager('catalog', result.page, result.totalPages);
  }

  function renderPager(name, page, totalPages) {
    $(`#${name}-prev`).disabled = page <= 0;
    $(`#${name}-next`).disabled = page + 1 >= totalPages;
    $(`#${name}-page`).textContent = totalPages ? `Page ${page + 1} of ${totalPages}` : '';
  }

  /** There is no categories endpoint: the filter offers the categories of the first 100 products. */
  async function loadCategories() {
    try {
      const result = await api('/api/products?size=100');
      for (const product of result.items) state.products.set(product.sku, product);
      const categories = [...new Set(result.items.map((p) => p.category))].sort();
      const select = $('#category');
      const chosen = catalogQuery().category || select.value;
      select.replaceChildren(el('option', { value: '', text: 'All categories' }),
        ...categories.map((c) => el('option', { value: c, text: categoryLabel(c) })));
      select.value = categories.includes(chosen) ? chosen : '';
      $('#category-options').replaceChildren(...categories.map((c) => el('option', { value: c })));
    } catch {
      // The filter stays at "All categories"; the catalog reports its own errors.
    }
  }

  // --- one product: availability limits the quantity ---------------------------------------------------------

  async function stockLevel(sku) {
    try {
      const level = await api(`/api/inventory/${encodeURIComponent(sku)}`);
      state.levels.set(sku, level.available);
      return level.available;
    } catch (error) {
      if (error.status === 404) {
        state.levels.set(sku, 0);
        return 0;
      }
      return null; // unknown for now: the order itself will be checked
    }
  }

  /** How many more the shopper may add: what is available, less what the cart holds already. */
  function addable(sku) {
    const available = state.levels.get(sku);
    const limit = Math.min(MAX_LINE_QUANTITY, available ?? MAX_LINE_QUANTITY);
    return Math.max(0, limit - (readCart()[sku] || 0));
  }

  function availabilityText(available, product) {
    if (product && !product.active) return ['No longer sold', 'out'];
    if (available === null || available === undefined) return ['Availability unknown right now', 'low'];
    if (available <= 0) return ['Out of stock', 'out'];
    if (available <= LOW_STOCK_SHOWN) return [`Only ${available} left`, 'low'];
    return [`${available} in stock`, 'in'];
  }

  async function showProduct(sku) {
    const request = ++state.productRequest;
    const current = () => request === state.productRequest;
    $('#product-name').textContent = 'Loading…';
    for (const id of ['category', 'price', 'description', 'stock']) $(`#product-${id}`).textContent = '';
    $('#product-picture').hidden = true;
    $('#add-form').dataset.sku = sku;
    $('#add-form').hidden = true;
    let product;
    try {
      product = await api(`/api/products/${encodeURIComponent(sku)}`);
    } catch (error) {
      if (!current()) return;
      $('#product-name').textContent = 'Product not available';
      document.title = 'Product not available · Shop';
      if (error.status !== 404) report(error);
      return;
    }
    if (!current()) return;
    state.products.set(sku, product);
    document.title = `${product.name} · Shop`;
    $('#product-name').textContent = product.name;
    $('#product-category').textContent = categoryLabel(product.category);
    $('#product-price').textContent = money(product.price, product.currency);
    $('#product-description').textContent = product.description;
    if (product.image) {
      $('#product-picture').src = product.image;
      $('#product-picture').alt = product.name;
      $('#product-picture').hidden = false;
    }
    const stock = $('#product-stock');
    stock.textContent = 'Checking availability…';
    stock.className = 'stock';
    const available = await stockLevel(sku);
    if (!current()) return;
    const [text, kind] = availabilityText(available, product);
    stock.textContent = text;
    stock.classList.add(kind);
    renderAddForm(sku, product);
  }

  function renderAddForm(sku, product) {
    const room = addable(sku);
    const input = $('#add-quantity');
    input.max = String(Math.max(1, room));
    input.value = String(Math.min(Math.max(1, Number(input.value) || 1), Math.max(1, room)));
    input.dataset.message = room > 0 ? `Choose 1 to ${room}.` : 'None left to add.';
    $('#add-form').hidden = !product.active || state.levels.get(sku) === 0;
    $('#add-button').disabled = room <= 0;
    $('#add-button').textContent = room > 0 ? 'Add to cart' : 'All available units are in your cart';
  }

  // --- cart (localStorage: sku -> quantity) ----------------------------------------------------------------

  function readCart() {
    const cart = readJson(localStorage, STORE.cart, {});
    return typeof cart === 'object' && !Array.isArray(cart) ? cart : {};
  }

  function writeCart(cart) {
    localStorage.setItem(STORE.cart, JSON.stringify(cart));
    renderCartCount();
  }

  const cartItems = () =>
    Object.entries(readCart())
      .filter(([, quantity]) => Number.isInteger(quantity) && quantity > 0)
      .map(([skuCode, quantity]) => ({ skuCode, quantity }));

  function renderCartCount() {
    $('#cart-count').textContent = String(cartItems().reduce((sum, item) => sum + item.quantity, 0));
  }

  async function addToCart(sku, quantity) {
    if (!state.levels.has(sku)) await stockLevel(sku);
    const room = addable(sku);
    const name = productName(sku);
    if (room <= 0) {
      const available = state.levels.get(sku);
      notify(available ? `Your cart already holds all ${available} ${name} there are.` : `${name} is out of stock.`,
        { error: true });
      return;
    }
    const added = Math.min(room, quantity);
    const cart = readCart();
    cart[sku] = (cart[sku] || 0) + added;
    writeCart(cart);
    const note = added < quantity ? ` Only ${added} more could be added: that is all there is.` : '';
    notify(`Added ${added} × ${name} to the cart.${note}`);
    if (state.route.view === 'product') renderAddForm(sku, state.products.get(sku));
  }

  function setQuantity(sku, quantity) {
    const cart = readCart();
    if (quantity > 0) cart[sku] = quantity;
    else delete cart[sku];
    writeCart(cart);
  }

  function renderCart() {
    const items = cartItems();
    document.title = items.length ? `Cart (${items.length}) · Shop` : 'Cart · Shop';
    $('#cart-empty').hidden = items.length > 0;
    $('#cart-form').hidden = items.length === 0;
    clearErrors($('#cart-form'));
    // Row i is line i of the order, so "/items/i/..." errors land on the right row.
    const rows = items.map(({ skuCode, quantity }, i) => {
      const product = state.products.get(skuCode);
      const name = product?.name || skuCode;
      const available = state.levels.get(skuCode);
      const max = Math.min(MAX_LINE_QUANTITY, available ?? MAX_LINE_QUANTITY);
      const input = el('input', { type: 'number', id: `cart-quantity-${i}`, min: 1, max: Math.max(1, max), step: 1,
        value: quantity, required: true, inputmode: 'numeric', 'data-field': `items/${i}/quantity`,
        'data-message': available ? `Choose 1 to ${max}: only ${available} left.` : 'Choose at least 1.' });
      input.addEventListener('change', () => {
        const value = Number(input.value);
        if (Number.isInteger(value) && value >= 1 && value <= max) {
          setQuantity(skuCode, value);
          clearErrors($('#cart-form'));
        } else {
          markField(input, input.dataset.message);
        }
        renderCartTotals();
      });
      const remove = el('button', { type: 'button', class: 'link', text: 'Remove' },
        el('span', { class: 'visually-hidden', text: ` ${name}` }));
      remove.addEventListener('click', () => {
        setQuantity(skuCode, 0);
        renderCart();
      });
      const link = el('a', { href: `#/product/${encodeURIComponent(skuCode)}`, id: `cart-product-${i}`,
        'data-field': `items/${i}/skuCode`, text: name });
      return el('tr', { 'data-sku': skuCode },
        el('td', {}, el('div', { class: 'cart-product' }, product ? picture(product) : null, link)),
        el('td', { class: 'num', 'data-label': 'Unit price', text: product ? money(product.price, product.currency) : '…' }),
        el('td', { 'data-label': 'Quantity' },
          el('label', { for: input.id, class: 'visually-hidden', text: `Quantity of ${name}` }), input),
        el('td', { class: 'num line-total', 'data-label': 'Line total' }),
        el('td', {}, remove));
    });
    $('#cart-lines').replaceChildren(...rows);
    renderCartTotals();
    // The cart outlives the page: fetch names, prices and stock of SKUs not seen in this visit, then draw again.
    const unknown = items.filter((item) => !state.products.has(item.skuCode) || !state.levels.has(item.skuCode));
    if (!unknown.length) return;
    const lookups = unknown.flatMap((item) => [
      state.products.has(item.skuCode) ? null : api(`/api/products/${encodeURIComponent(item.skuCode)}`),
      stockLevel(item.skuCode),
    ]);
    Promise.allSettled(lookups).then((answers) => {
      for (const answer of answers) {
        if (answer.status === 'fulfilled' && answer.value && answer.value.sku) state.products.set(answer.value.sku, answer.value);
      }
      if (state.route.view === 'cart') renderCart();
    });
  }

  /** Line totals and an estimate; the order's own total comes from the catalog's prices. */
  function renderCartTotals() {
    const lines = cartItems().map(({ skuCode, quantity }) => ({ product: state.products.get(skuCode), quantity }));
    lines.forEach(({ product, quantity }, i) => {
      const cell = $('#cart-lines').rows[i]?.querySelector('.line-total');
      if (cell) cell.textContent = product ? money(product.price * quantity, product.currency) : '…';
    });
    const currencies = new Set(lines.map((line) => line.product?.currency));
    const total = lines.reduce((sum, { product, quantity }) => sum + (product?.price ?? NaN) * quantity, 0);
    const estimable = currencies.size === 1 && !Number.isNaN(total); // every price known, one currency
    $('#cart-total').textContent = estimable ? money(total, [...currencies][0]) : '—';
  }

  function prefillCheckout() {
    const profile = state.session?.profile;
    if (!profile) return;
    const name = profile.name || [profile.given_name, profile.family_name].filter(Boolean).join(' ');
    if (!$('#c-name').value) $('#c-name').value = name || '';
    if (!$('#c-email').value) $('#c-email').value = profile.email || '';
    if (!$('#s-name').value) $('#s-name').value = name || '';
  }

  function checkoutDetails(form) {
    const value = (name) => form.elements[name].value.trim();
    const contact = { name: value('contactName'), email: value('email') };
    if (value('phone')) contact.phone = value('phone');
    if (!contact.name) delete contact.name;
    const shippingAddress = { name: value('shipName'), line1: value('line1'), city: value('city'),
      postalCode: value('postalCode'), country: value('country') };
    if (value('line2')) shippingAddress.line2 = value('line2');
    return { contact, shippingAddress };
  }

  async function placeOrder(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const items = cartItems();
    $('#order-result').hidden = true; // an old confirmation never stands above a new error
    if (!state.session) {
      notify('Please sign in to place your order. Your cart is kept.', { signIn: true });
      return;
    }
    if (!validForm(form) || !items.length) return;
    const body = { items, ...checkoutDetails(form) };
    // One Idempotency-Key per cart content, kept until the order is confirmed: retrying after a lost
    // answer replays the same order instead of placing a second one. A changed cart gets a new key.
    let pending = readJson(localStorage, STORE.pendingOrder, null);
    if (!pending || pending.body !== JSON.stringify(body)) {
      pending = { key: crypto.randomUUID(), body: JSON.stringify(body) };
      localStorage.setItem(STORE.pendingOrder, JSON.stringify(pending));
    }
    const submit = $('#place-order');
    submit.disabled = true;
    submit.textContent = 'Placing your order…';
    try {
      const headers = { 'Idempotency-Key': pending.key };
      const order = await api('/api/orders', { method: 'POST', body, auth: true, headers });
      localStorage.removeItem(STORE.pendingOrder);
      writeCart({});
      for (const line of order.items) state.levels.delete(line.skuCode); // stock moved
      renderCart();
      const total = money(order.total, order.currency);
      $('#order-result').replaceChildren(
        el('p', {}, 'Thank you! Order ', el('strong', { text: order.orderNumber }), ` is placed. Total ${total}.`),
        el('p', { text: `A confirmation is on its way to ${order.contact?.email || order.customer?.email}.` }),
        el('p', {}, el('a', { href: '#/orders', text: 'See my orders' })));
      $('#order-result').hidden = false;
      $('#notice').hidden = true;
      $('#order-result').scrollIntoView({ block: 'nearest' });
    } catch (error) {
      if (error.problem?.type?.endsWith('idempotency-key-reused')) localStorage.removeItem(STORE.pendingOrder);
      report(error, form, 'ordered');
      markShortages(error.problem?.shortages, items);
    } finally {
      submit.disabled = false;
      submit.textContent = 'Place order';
    }
  }

  /** A 409 names short SKUs in a "shortages" extension rather than in field errors: mark those lines too. */
  function markShortages(shortages, items) {
    if (!Array.isArray(shortages)) return;
    for (const { skuCode, available } of shortages) {
      state.levels.set(skuCode, available);
      const input = $(`#cart-quantity-${items.findIndex((item) => item.skuCode === skuCode)}`);
      if (input) {
        input.max = String(Math.max(1, available));
        markField(input, available > 0 ? `Only ${available} left.` : 'Sold out: remove it to order the rest.');
      }
    }
  }

  // --- orders: a customer's own, and every order for an admin ---------------------------------------------------

  function addressText(address) {
    if (!address) return '';
    return [address.name, address.line1, address.line2, `${address.postalCode} ${address.city}`,
      COUNTRIES.find(([code]) => code === address.country)?.[1] || address.country].filter(Boolean).join('\n');
  }

  function renderOrder(order, { admin = false, onCancelled } = {}) {
    const lines = order.items.map((line) =>
      el('li', { text: `${line.quantity} × ${line.name} — ${money(line.lineTotal, order.currency)}` }));
    const customer = order.customer || {};
    const article = el('article', { class: 'card order', 'data-order': order.orderNumber },
      el('header', { class: 'order-head' },
        el('h2', { text: order.orderNumber }),
        el('span', { class: `status status-${order.status.toLowerCase()}`,
          text: order.status === 'PLACED' ? 'Placed' : 'Cancelled' })),
      el('p', { class: 'muted', text: `Placed ${when(order.placedAt)}` }),
      admin ? el('p', { text: `Customer: ${[customer.firstName, customer.lastName].filter(Boolean).join(' ')} <${customer.email}>` }) : null,
      el('ul', { class: 'order-lines' }, ...lines),
      el('p', {}, 'Total ', el('strong', { text: money(order.total, order.currency) })),
      order.shippingAddress ? el('p', { class: 'ship-to', text: `Ship to:\n${addressText(order.shippingAddress)}` }) : null);
    if (order.cancelReason !== undefined && order.status === 'CANCELLED') {
      article.append(el('p', { class: 'muted', text: `Cancelled ${when(order.cancelledAt)}${order.cancelReason ? `: ${order.cancelReason}` : ''}` }));
    }
    if (order.status === 'PLACED') article.append(cancelForm(order.orderNumber, { admin, onCancelled }));
    return el('li', {}, article);
  }

  /** The reason sits in a disclosure, so cancelling takes a deliberate second step; an admin must give one. */
  function cancelForm(orderNumber, { admin, onCancelled }) {
    const id = `cancel-reason-${orderNumber}`;
    const form = el('form', { class: 'cancel-form', novalidate: true },
      el('div', { class: 'field' }, el('label', { for: id, text: admin ? 'Reason (the customer sees it)' : 'Reason (optional)' }),
        el('input', { id, name: 'reason', maxlength: 500, 'data-field': 'reason', required: admin,
          'data-message': 'Give the customer a reason.' })),
      el('p', { class: 'form-error', 'data-form-error': true }),
      el('button', { type: 'submit', class: 'danger', text: 'Cancel order' }));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      if (!validForm(form)) return;
      const submit = form.querySelector('button');
      submit.disabled = true;
      const body = { reason: form.elements.reason.value.trim() || 'cancelled in the storefront' };
      try {
        await api(`/api/orders/${encodeURIComponent(orderNumber)}/cancel`, { method: 'POST', auth: true, body });
        state.levels.clear(); // the stock comes back
        notify(`Order ${orderNumber} is cancelled.`);
        await onCancelled();
      } catch (error) {
        report(error, form, 'cancelled');
        submit.disabled = false;
      }
    });
    return el('details', { class: 'cancel' }, el('summary', { text: 'Cancel this order…' }), form);
  }

  const pageParam = () => Math.max(0, (Number.parseInt(state.route.params.get('page') || '1', 10) || 1) - 1);

  async function loadOrders() {
    document.title = 'My orders · Shop';
    const list = $('#order-list');
    const empty = $('#orders-empty');
    if (!state.session) {
      list.replaceChildren();
      renderPager('orders', 0, 0);
      empty.textContent = 'Sign in to see your orders.';
      empty.hidden = false;
      return;
    }
    const page = pageParam();
    const params = new URLSearchParams({ page: String(page), size: String(ORDERS_PAGE_SIZE) });
    // An admin's unfiltered list is everybody's orders; "My orders" asks for the admin's own.
    if (isAdmin() && state.session.claims.sub) params.set('customer', state.session.claims.sub);
    const query = params.toString();
    list.setAttribute('aria-busy', 'true');
    try {
      const result = await api(`/api/orders?${query}`, { auth: true });
      list.replaceChildren(...result.items.map((order) => renderOrder(order, { onCancelled: loadOrders })));
      empty.textContent = 'You have no orders yet.';
      empty.hidden = result.items.length > 0;
      renderPager('orders', result.page, result.totalPages);
    } catch (error) {
      report(error);
    } finally {
      list.removeAttribute('aria-busy');
    }
  }

  // --- admin console ---------------------------------------------------------------------------------------

  function adminTab() {
    const tab = ADMIN_TABS.includes(state.route.arg) ? state.route.arg : 'products';
    for (const name of ADMIN_TABS) $(`#tab-${name}`).hidden = name !== tab;
    for (const link of $$('[data-tab]')) {
      if (link.dataset.tab === tab) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    const label = $(`[data-tab="${tab}"]`).textContent;
    document.title = `${label} · Admin · Shop`;
    clearInterval(state.admin.eventsTimer);
    ({ products: loadAdminProducts, stock: loadStock, orders: loadAdminOrders, deadletters: loadDeadLetters,
      events: loadEvents, flags: loadFlags })[tab]();
  }

  // products: list (active and inactive), create, edit, deactivate and reactivate

  async function loadAdminProducts() {
    const page = pageParam();
    const q = state.route.params.get('q') || '';
    $('#ap-q').value = q;
    const params = new URLSearchParams({ includeInactive: 'true', size: String(ADMIN_PAGE_SIZE), page: String(page) });
    if (q) params.set('q', q);
    const query = params.toString();
    try {
      const result = await api(`/api/products?${query}`, { auth: true });
      $('#admin-product-rows').replaceChildren(...result.items.map(adminProductRow));
      renderPager('ap', result.page, result.totalPages);
    } catch (error) {
      report(error);
    }
  }

  function adminProductRow(product) {
    state.products.set(product.sku, product);
    const toggle = button(product.active ? 'Deactivate' : 'Reactivate', () => setActive(product, !product.active),
      { kind: 'small secondary', label: `${product.active ? 'Deactivate' : 'Reactivate'} ${product.name}` });
    const edit = button('Edit', () => editProduct(product.sku), { kind: 'small', label: `Edit ${product.name}` });
    return el('tr', { 'data-sku': product.sku },
      el('td', {}, el('strong', { text: product.name }), el('br'), el('small', { class: 'muted', text: product.sku })),
      el('td', { text: categoryLabel(product.category) }),
      el('td', { class: 'num', text: money(product.price, product.currency) }),
      el('td', {}, el('span', { class: `status status-${product.active ? 'active' : 'inactive'}`,
        text: product.active ? 'Active' : 'Inactive' })),
      el('td', {}, el('div', { class: 'actions' }, edit, toggle)));
  }

  async function setActive(product, active) {
    try {
      const current = await api(`/api/products/${encodeURIComponent(product.sku)}`);
      const headers = current.etag ? { 'If-Match': current.etag } : {};
      await api(`/api/products/${encodeURIComponent(product.sku)}`, { method: 'PATCH', auth: true, body: { active }, headers });
      notify(`${product.name} is ${active ? 'for sale again' : 'no longer for sale'}.`);
      loadAdminProducts();
    } catch (error) {
      report(error, null, 'changed');
    }
  }

  async function editProduct(sku) {
    try {
      const product = await api(`/api/products/${encodeURIComponent(sku)}`);
      state.admin.editing = product;
      const form = $('#product-form');
      clearErrors(form);
      for (const name of ['sku', 'name', 'description', 'category', 'price', 'currency']) form.elements[name].value = product[name] ?? '';
      form.elements.image.value = product.image || '';
      form.elements.sku.readOnly = true;
      $('#product-form-title').textContent = `Edit ${product.name}`;
      $('#product-submit').textContent = 'Save changes';
      $('#product-cancel').hidden = false;
      form.elements.name.focus();
    } catch (error) {
      report(error);
    }
  }

  function stopEditing() {
    state.admin.editing = null;
    const form = $('#product-form');
    form.reset();
    clearErrors(form);
    form.elements.sku.readOnly = false;
    $('#product-form-title').textContent = 'New product';
    $('#product-submit').textContent = 'Create product';
    $('#product-cancel').hidden = true;
  }

  async function saveProduct(event) {
    event.preventDefault();
    const form = event.currentTarget;
    if (!validForm(form)) return;
    const data = Object.fromEntries([...new FormData(form)].map(([name, value]) => [name, value.trim()]));
    const editing = state.admin.editing;
    try {
      if (editing) {
        const changes = { name: data.name, description: data.description, category: data.category,
          price: Number(data.price), currency: (data.currency || 'USD').toUpperCase(), image: data.image || null };
        const headers = editing.etag ? { 'If-Match': editing.etag } : {};
        const product = await api(`/api/products/${encodeURIComponent(editing.sku)}`,
          { method: 'PATCH', auth: true, body: changes, headers });
        notify(`Saved ${product.name}.`);
      } else {
        const body = { sku: data.sku, name: data.name, category: data.category, price: Number(data.price) };
        if (data.description) body.description = data.description;
        if (data.currency) body.currency = data.currency.toUpperCase();
        if (data.image) body.image = data.image;
        const product = await api('/api/products', { method: 'POST', auth: true, body });
        state.products.set(product.sku, product);
        notify(`Created ${product.name}. It has no stock yet: set it under Stock.`);
      }
      stopEditing();
      loadAdminProducts();
      loadCategories();
    } catch (error) {
      report(error, form, editing ? 'changed' : 'created');
    }
  }

  // stock: set or add, choosing among existing products only; the low-stock list

  async function loadStock() {
    await findStockProducts();
    try {
      const low = await api('/api/inventory?lowStock=true&size=100', { auth: true });
      $('#low-empty').hidden = low.items.length > 0;
      $('#low-stock').hidden = low.items.length === 0;
      $('#low-stock-rows').replaceChildren(...low.items.map((level) => el('tr', { 'data-sku': level.skuCode },
        el('td', { text: productName(level.skuCode) }),
        el('td', { class: 'num', text: String(level.available) }),
        el('td', { class: 'num', text: String(level.lowStockThreshold) }),
        el('td', {}, button('Restock', () => chooseStockProduct(level.skuCode),
          { kind: 'small secondary', label: `Restock ${productName(level.skuCode)}` })))));
    } catch (error) {
      report(error);
    }
  }

  /** The product picker offers products the catalog has (searched by name or SKU), never a typed SKU. */
  async function findStockProducts(chosen = $('#r-sku').value) {
    const q = $('#r-find').value.trim();
    const params = new URLSearchParams({ includeInactive: 'true', size: '100' });
    if (q) params.set('q', q);
    const query = params.toString();
    try {
      const result = await api(`/api/products?${query}`, { auth: true });
      for (const product of result.items) state.products.set(product.sku, product);
      const options = result.items.map((p) => el('option', { value: p.sku, text: `${p.name} (${p.sku})${p.active ? '' : ' — inactive'}` }));
      $('#r-sku').replaceChildren(el('option', { value: '', text: result.items.length ? 'Choose a product…' : 'No product matches' }), ...options);
      if (chosen && result.items.some((p) => p.sku === chosen)) $('#r-sku').value = chosen;
      showStockLevel();
    } catch (error) {
      report(error);
    }
  }

  async function chooseStockProduct(sku) {
    $('#r-find').value = productName(sku);
    await findStockProducts(sku);
    $('#r-quantity').focus();
  }

  async function showStockLevel() {
    const sku = $('#r-sku').value;
    $('#r-level').textContent = '';
    if (!sku) return;
    const available = await stockLevel(sku);
    if ($('#r-sku').value === sku) {
      $('#r-level').textContent = available === null ? '' : `${plural(available, 'unit')} available now.`;
    }
  }

  async function restock(event) {
    event.preventDefault();
    const form = event.currentTarget;
    if (!validForm(form)) return;
    const sku = form.elements.sku.value;
    const body = { quantity: Number(form.elements.quantity.value), mode: form.elements.mode.value };
    if (form.elements.lowStockThreshold.value !== '') body.lowStockThreshold = Number(form.elements.lowStockThreshold.value);
    try {
      const level = await api(`/api/inventory/${encodeURIComponent(sku)}`, { method: 'PUT', auth: true, body });
      state.levels.set(sku, level.available);
      notify(`${productName(sku)}: ${level.available} available (low-stock threshold ${level.lowStockThreshold}).`);
      form.elements.quantity.value = '';
      loadStock();
    } catch (error) {
      report(error, form, 'changed');
    }
  }

  // orders: every order, filtered by customer, status and day; cancel any with a reason

  async function loadAdminOrders() {
    const params = state.route.params;
    const form = $('#order-filter');
    for (const name of ['email', 'status', 'from', 'to']) form.elements[name].value = params.get(name) || '';
    const query = new URLSearchParams({ page: String(pageParam()), size: String(ADMIN_PAGE_SIZE) });
    for (const name of ['email', 'status', 'from', 'to']) if (params.get(name)) query.set(name, params.get(name));
    const text = query.toString();
    try {
      const result = await api(`/api/orders?${text}`, { auth: true });
      clearErrors(form);
      $('#admin-orders-summary').textContent = result.totalItems ? plural(result.totalItems, 'order') : 'No orders match.';
      $('#admin-order-list').replaceChildren(...result.items.map((order) =>
        renderOrder(order, { admin: true, onCancelled: loadAdminOrders })));
      renderPager('ao', result.page, result.totalPages);
    } catch (error) {
      report(error, form);
    }
  }

  function filterOrders(event) {
    event.preventDefault();
    const form = event.currentTarget;
    if (!validForm(form)) return;
    const params = new URLSearchParams();
    for (const name of ['email', 'status', 'from', 'to']) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    const text = params.toString();
    location.hash = `#/admin/orders${text ? `?${text}` : ''}`;
  }

  // dead letters: the list with Knative's error attributes, one inspected, one replayed

  const serviceOf = (url) => /^https?:\/\/([^./]+)/.exec(url || '')?.[1] || url || '';

  async function loadDeadLetters() {
    try {
      const result = await api('/api/deadletters?size=50', { auth: true });
      $('#dl-empty').hidden = result.items.length > 0;
      $('#dead-letters').hidden = result.items.length === 0;
      $('#dead-letter-rows').replaceChildren(...result.items.map((dead) => el('tr', { 'data-id': dead.id },
        el('td', { text: String(dead.id) }),
        el('td', {}, el('span', { text: dead.type }), el('br'), el('small', { class: 'muted', text: dead.subject || '' })),
        el('td', { text: serviceOf(dead.destination) }),
        el('td', { class: 'num', text: dead.errorCode ?? '—' }),
        el('td', { text: when(dead.receivedAt) }),
        el('td', { text: dead.replayedAt ? `${when(dead.replayedAt)} (${dead.replayStatus})` : 'No' }),
        el('td', {}, button('Inspect', () => inspectDeadLetter(dead.id), { kind: 'small secondary', label: `Inspect dead letter ${dead.id}` })))));
      if (state.admin.deadLetter && !result.items.some((d) => d.id === state.admin.deadLetter)) $('#dl-detail').hidden = true;
    } catch (error) {
      report(error);
    }
  }

  async function inspectDeadLetter(id) {
    try {
      const dead = await api(`/api/deadletters/${id}`, { auth: true });
      state.admin.deadLetter = dead.id;
      $('#dl-title').textContent = `Dead letter ${dead.id}: ${dead.type}`;
      const facts = [['Subject', dead.subject || '—'], ['Event id', dead.eventId], ['Source', dead.source],
        ['Failed at (knativeerrordest)', dead.destination], ['Status (knativeerrorcode)', dead.errorCode ?? 'no answer'],
        ['Received', when(dead.receivedAt)], ['Replayed', dead.replayedAt ? `${when(dead.replayedAt)}, answered ${dead.replayStatus}` : 'not yet']];
      $('#dl-facts').replaceChildren(...facts.flatMap(([term, value]) => [el('dt', { text: term }), el('dd', { text: String(value) })]));
      $('#dl-error').textContent = dead.errorData || '(none)';
      $('#dl-event').textContent = JSON.stringify(dead.event, null, 2);
      $('#dl-detail').hidden = false;
      $('#dl-title').focus();
    } catch (error) {
      report(error);
    }
  }

  async function replayDeadLetter() {
    const id = state.admin.deadLetter;
    const submit = $('#dl-replay');
    submit.disabled = true;
    try {
      const dead = await api(`/api/deadletters/${id}/replay`, { method: 'POST', auth: true });
      notify(`Dead letter ${dead.id} was delivered again to ${serviceOf(dead.destination)}.`);
      await loadDeadLetters();
      await inspectDeadLetter(id);
    } catch (error) {
      const status = error.problem?.destinationStatus;
      notify(status ? `The replay failed again: ${serviceOf(error.problem.detail?.split(' ')[0])} answered ${status}. Fix the cause first.`
        : describe(error, 'replayed'), { error: true });
    } finally {
      submit.disabled = false;
    }
  }

  // live event flow (the local runtime's Broker)

  async function loadEvents() {
    try {
      const flow = await local('/_local/events?limit=50');
      if (flow === null) {
        $('#events-note').textContent = 'The live event flow comes from the local runtime\'s Broker (./taskw start). In a cluster, follow events in the traces and on the Grafana dashboard.';
        $('#event-rows').replaceChildren();
        return;
      }
      $('#event-rows').replaceChildren(...flow.events.map((event) => el('tr', {},
        el('td', { text: new Date(event.receivedAt).toLocaleTimeString() }),
        el('td', { text: event.type }),
        el('td', { text: event.subject || '' }),
        el('td', {}, event.deliveries.length
          ? el('ul', { class: 'deliveries' }, ...event.deliveries.map((d) => el('li', {},
            `${serviceOf(d.subscriber)}: `,
            el('span', { class: `status status-${d.outcome}`, text: d.outcome }),
            d.attempts > 1 ? ` after ${plural(d.attempts, 'attempt')}` : '',
            d.status && d.outcome !== 'delivered' ? ` (last answer ${d.status})` : '')))
          : el('span', { class: 'muted', text: 'no subscriber' })))));
    } catch (error) {
      report(error);
    }
    if (state.route.view === 'admin' && state.route.arg === 'events') {
      clearInterval(state.admin.eventsTimer);
      state.admin.eventsTimer = setTimeout(loadEvents, 2000);
    }
  }

  // fault flags (the local runtime's /_local/flags; a ConfigMap in a cluster)

  async function loadFlags() {
    try {
      const flags = await local('/_local/flags');
      if (flags === null) {
        $('#flags-note').textContent = 'In a cluster the fault flags are the ConfigMap shop-flags: kubectl -n shop edit configmap shop-flags.';
        $('#flag-list').replaceChildren();
        $('#flags-reset').hidden = true;
        return;
      }
      $('#flag-list').replaceChildren(...flags.flags.map((flag) => {
        const id = `flag-${flag.key}`;
        const select = el('select', { id, 'data-flag': flag.key },
          ...Object.keys(flag.variants).map((variant) => el('option', { value: variant, text: variant })));
        select.value = flag.variant;
        select.addEventListener('change', () => setFlag(flag.key, select.value));
        return el('li', { class: `card${flag.on ? ' on' : ''}` },
          el('div', {}, el('code', { text: flag.key }), el('p', { class: 'muted', text: flag.description })),
          el('div', { class: 'field' }, el('label', { for: id, text: 'Variant' }), select));
      }));
    } catch (error) {
      report(error);
    }
  }

  async function setFlag(key, variant) {
    try {
      await local(`/_local/flags/${encodeURIComponent(key)}`, { method: 'PUT', body: { variant } });
      notify(variant === 'off' ? `${key} is off.` : `${key} is now ${variant}.`);
    } catch (error) {
      report(error);
    }
    loadFlags();
  }

  async function resetFlags() {
    try {
      await local('/_local/flags/reset', { method: 'POST' });
      notify('Every fault flag is off.');
    } catch (error) {
      report(error);
    }
    loadFlags();
  }

  // --- views (hash routing: #/catalog?.., #/product/<sku>, #/cart, #/orders?page=, #/admin/<tab>?..) ---------

  function parseRoute() {
    const [path, query = ''] = location.hash.replace(/^#/, '').split('?');
    const match = /^\/([a-z]+)(?:\/(.+))?$/.exec(path) || [];
    let view = VIEWS.includes(match[1]) ? match[1] : 'catalog';
    if (view === 'product' && !match[2]) view = 'catalog';
    return { view, arg: match[2] ? decodeURIComponent(match[2]) : '', params: new URLSearchParams(query) };
  }

  function route({ focus = true } = {}) {
    const previous = state.route.view;
    state.route = parseRoute();
    let { view } = state.route;
    if (view === 'admin' && !isAdmin()) {
      notify(state.session ? 'The admin console needs the admin role.' : 'Please sign in as an admin.', { signIn: !state.session });
      view = state.route.view = 'catalog';
    }
    if (previous !== view) $('#order-result').hidden = true;
    clearInterval(state.admin.eventsTimer);
    for (const name of VIEWS) $(`#view-${name}`).hidden = name !== view;
    for (const link of $$('[data-nav]')) {
      if (link.dataset.nav === (view === 'product' ? 'catalog' : view)) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    document.title = `${TITLES[view] || 'Shop'} · Shop`;
    if (view === 'catalog') loadCatalog();
    if (view === 'product') showProduct(state.route.arg);
    if (view === 'cart') renderCart();
    if (view === 'orders') loadOrders();
    if (view === 'admin') adminTab();
    if (focus && previous !== view) $(`#view-${view} h1`).focus(); // keyboard and screen reader users land on the new view
  }

  function bindEvents() {
    $('#sign-in').addEventListener('click', signIn);
    $('#notice-sign-in').addEventListener('click', signIn);
    $('#sign-out').addEventListener('click', signOut);
    $('#notice-close').addEventListener('click', () => ($('#notice').hidden = true));
    $('#search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      goCatalog({ q: $('#q').value.trim(), page: 0 });
    });
    for (const id of ['#category', '#sort']) {
      $(id).addEventListener('change', () => goCatalog({ category: $('#category').value, sort: $('#sort').value, page: 0 }));
    }
    $('#catalog-prev').addEventListener('click', () => goCatalog({ page: catalogQuery().page - 1 }));
    $('#catalog-next').addEventListener('click', () => goCatalog({ page: catalogQuery().page + 1 }));
    const pageTo = (base, delta) => () => {
      const params = new URLSearchParams(state.route.params);
      params.set('page', String(pageParam() + 1 + delta));
      location.hash = `${base}?${params.toString()}`;
    };
    $('#orders-prev').addEventListener('click', pageTo('#/orders', -1));
    $('#orders-next').addEventListener('click', pageTo('#/orders', 1));
    $('#ap-prev').addEventListener('click', pageTo('#/admin/products', -1));
    $('#ap-next').addEventListener('click', pageTo('#/admin/products', 1));
    $('#ao-prev').addEventListener('click', pageTo('#/admin/orders', -1));
    $('#ao-next').addEventListener('click', pageTo('#/admin/orders', 1));
    $('#add-form').addEventListener('submit', (event) => {
      event.preventDefault();
      if (validForm(event.currentTarget)) addToCart(event.currentTarget.dataset.sku, Number($('#add-quantity').value));
    });
    $('#cart-form').addEventListener('submit', placeOrder);
    $('#product-search').addEventListener('submit', (event) => {
      event.preventDefault();
      const q = $('#ap-q').value.trim();
      location.hash = `#/admin/products${q ? `?q=${encodeURIComponent(q)}` : ''}`;
    });
    $('#product-form').addEventListener('submit', saveProduct);
    $('#product-cancel').addEventListener('click', stopEditing);
    $('#restock-form').addEventListener('submit', restock);
    let finding = 0;
    $('#r-find').addEventListener('input', () => {
      clearTimeout(finding);
      finding = setTimeout(() => findStockProducts(), 250);
    });
    $('#r-sku').addEventListener('change', showStockLevel);
    $('#order-filter').addEventListener('submit', filterOrders);
    $('#dl-replay').addEventListener('click', replayDeadLetter);
    $('#flags-reset').addEventListener('click', resetFlags);
    window.addEventListener('hashchange', () => route());
    window.addEventListener('storage', (event) => {
      if (event.key !== STORE.cart) return; // another tab changed the cart
      renderCartCount();
      if (state.route.view === 'cart') renderCart();
    });
  }

  async function start() {
    $('#s-country').append(...COUNTRIES.map(([code, name]) => el('option', { value: code, text: name })));
    bindEvents();
    renderCartCount();
    state.started = (async () => {
      state.config = await getJson('/storefront/config.json');
      try {
        state.oidc = await getJson(`${state.config.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
      } catch {
        notify('Signing in is not possible right now; you can still browse the catalog.', { error: true });
      }
    })();
    try {
      await state.started;
    } catch {
      return notify('The shop could not start. Please reload the page.', { error: true });
    }
    const params = new URLSearchParams(location.search);
    if ((params.has('code') || params.has('error')) && state.oidc) {
      await completeSignIn(params).catch((error) => notify(error.message, { signIn: true, error: true }));
    } else if (params.has('code')) {
      history.replaceState(null, '', `/${location.hash}`); // no issuer to finish this sign-in with: drop the code
    } else if (sessionStorage.getItem(STORE.refresh)) {
      await refresh(); // a reload: the access token was only in memory
    }
    renderAccount();
    await loadCategories();
    route({ focus: false });
  }

  start();
})();

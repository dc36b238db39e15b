// The shop's storefront: a framework-free single-page app served by the gateway.
// The page's Content-Security-Policy forbids inline code, so every handler is attached here,
// and API data reaches the page only through DOM nodes and textContent, never as HTML.
'use strict';

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);

  const STORE = {
    cart: 'shop.cart', // localStorage: { sku: quantity }
    pendingOrder: 'shop.pendingOrder', // localStorage: { key, body } of an order not yet confirmed
    refresh: 'shop.refreshToken', // sessionStorage: this tab only, gone when the tab closes
    login: 'shop.login', // sessionStorage: PKCE verifier, state and nonce while the user is at the issuer
  };
  const CATALOG_PAGE_SIZE = 12;
  const ORDERS_PAGE_SIZE = 10;
  const MAX_LINE_QUANTITY = 1000;
  const VIEWS = ['catalog', 'product', 'cart', 'orders', 'admin'];

  const state = {
    config: null, // /storefront/config.json
    oidc: null, // the issuer's discovery document
    session: null, // { accessToken, idToken, expiresAt, claims, profile }: in memory only
    refreshing: null, // the refresh in flight, shared by every caller that needs a token
    refreshTimer: 0,
    catalog: { q: '', category: '', sort: 'name', page: 0 },
    ordersPage: 0,
    products: new Map(), // sku -> product, for names and prices in the cart
    productRequest: 0, // drops answers for a product page the user already left
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
    node.append(...children);
    return node;
  }

  function money(amount, currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: 'currency', currency: currency || 'USD' }).format(amount);
    } catch {
      return `${Number(amount).toFixed(2)} ${currency || ''}`.trim();
    }
  }

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

  // --- notices and problem details (RFC 9457) -----------------------------------------------------

  function notify(text, { signIn = false, error = false } = {}) {
    $('#notice-text').textContent = text;
    $('#notice-sign-in').hidden = !signIn || Boolean(state.session);
    $('#notice').classList.toggle('error', error);
    $('#notice').hidden = false;
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
    const seconds = /^\d+$/.test(value) ? Number(value) : Math.ceil((Date.parse(value) - Date.now()) / 1000);
    if (!Number.isFinite(seconds)) return '';
    const wait = Math.max(1, seconds);
    return ` Try again in ${wait} second${wait === 1 ? '' : 's'}.`;
  }

  /** A problem's field ("/items/0/quantity", or a bare query parameter name) as a data-field value. */
  function fieldName(field, message) {
    const name = String(field || '').replace(/^\//, '').replace(/~1/g, '/').replace(/~0/g, '~');
    // The gateway reports a missing property at "/" and names it only in the message.
    const missing = /^'([^']+)' is a required property/.exec(message || '');
    return name || (missing ? missing[1] : '');
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
    note.textContent = note.textContent ? `${note.textContent} ${message}` : message;
    target.setAttribute('aria-invalid', 'true');
    target.setAttribute('aria-describedby', id);
  }

  /** Shows an error: its detail in the form's summary (else the notice), each field's message by its field. */
  function report(error, form = null) {
    if (!(error instanceof ApiError)) {
      console.error(error);
      error = new ApiError(0, { detail: error.message || 'Something went wrong.' });
    }
    let text = error.message;
    if ([409, 429, 503].includes(error.status) && error.retryAfter) text += retryText(error.retryAfter);
    const summary = form && form.querySelector('[data-form-error]');
    if (form) {
      clearErrors(form);
      for (const { field, message } of error.problem.errors || []) {
        const name = fieldName(field, message);
        const target = name && form.querySelector(`[data-field="${CSS.escape(name)}"]`);
        if (target) markField(target, message);
      }
      if (summary) summary.textContent = text;
    }
    if (error.status === 401) notify(`${text} Please sign in.`, { signIn: true, error: true });
    else if (!summary) notify(text, { error: true });
  }

  /** Checks a form against its HTML constraints first, showing messages the same way as the API's. */
  function validForm(form) {
    clearErrors(form);
    const invalid = [...form.elements].filter((input) => input.willValidate && !input.checkValidity());
    for (const input of invalid) markField(input, input.validationMessage);
    invalid[0]?.focus();
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
        throw new ApiError(0, { detail: 'The shop could not be reached. Check your connection and try again.' });
      }
    };
    let response = await send();
    // A token can be refused before it expires (session ended, keys rotated): one retry with a fresh one.
    if (response.status === 401 && auth && (await refresh())) response = await send();
    const text = await response.text();
    const data = text ? parseJson(text) : null;
    if (response.ok) return data;
    const problem = data && typeof data === 'object' ? data : { detail: text || response.statusText };
    throw new ApiError(response.status, problem, response.headers.get('Retry-After'));
  }

  // --- sign-in: authorization code flow with PKCE ------------------------------------------------------

  const redirectUri = () => `${location.origin}/`;

  async function signIn() {
    if (!state.oidc) {
      notify('Sign-in is unavailable: the identity provider could not be reached.', { error: true });
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
    if (refused) throw new Error(`Sign-in failed: ${refused}`);
    if (!login || params.get('state') !== login.state) {
      throw new Error('Sign-in failed: the answer does not belong to a sign-in started here. Please try again.');
    }
    if (params.has('iss') && params.get('iss') !== state.oidc.issuer) {
      throw new Error('Sign-in failed: the answer came from an unexpected issuer.'); // RFC 9207 mix-up defence
    }
    const tokens = await tokenRequest({ grant_type: 'authorization_code', code: params.get('code'),
      redirect_uri: redirectUri(), client_id: state.config.clientId, code_verifier: login.verifier });
    if (tokens.id_token && jwtClaims(tokens.id_token).nonce !== login.nonce) {
      throw new Error('Sign-in failed: the ID token does not answer this sign-in (nonce).');
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
      const error = new Error(`Sign-in failed: ${body.error_description || body.error || response.status}`);
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

  function renderAccount() {
    const profile = state.session?.profile ?? {};
    $('#user').hidden = !state.session;
    $('#user-name').textContent = profile.name || profile.preferred_username || profile.email || profile.sub || '';
    $('#user-roles').textContent = roles().length ? `Roles: ${roles().join(', ')}` : '';
    $('#sign-in').hidden = Boolean(state.session);
    $('#sign-out').hidden = !state.session;
    $('#admin-nav').hidden = !isAdmin();
    if (state.session) $('#notice-sign-in').hidden = true;
  }

  // --- catalog -------------------------------------------------------------------------------------------

  async function loadCatalog() {
    const { q, category, sort, page } = state.catalog;
    const params = new URLSearchParams({ sort, page: String(page), size: String(CATALOG_PAGE_SIZE) });
    if (q) params.set('q', q); // empty filters are left out: the API validates every parameter it gets
    if (category) params.set('category', category);
    const query = params.toString();
    const list = $('#product-list');
    list.setAttribute('aria-busy', 'true');
    try {
      renderProducts(await api(`/api/products?${query}`));
      clearErrors($('#search-form'));
    } catch (error) {
      report(error, $('#search-form'));
    } finally {
      list.removeAttribute('aria-busy');
    }
  }

  function renderProducts(result) {
    const cards = result.items.map((product) => {
      state.products.set(product.sku, product);
      const add = el('button', { type: 'button', class: 'secondary', text: 'Add to cart' });
      add.addEventListener('click', () => addToCart(product.sku, 1));
      const link = el('a', { href: `#/product/${encodeURIComponent(product.sku)}`, text: product.name });
      return el('li', {}, el('article', { class: 'card product-card' },
        el('h2', {}, link),
        el('p', { class: 'category', text: product.category }),
        el('p', { class: 'price', text: money(product.price, product.currency) }),
        add));
    });
    $('#product-list').replaceChildren(...cards);
    const total = result.totalItems;
    $('#catalog-summary').textContent = total ? `${total} product${total === 1 ? '' : 's'}` : 'No products match.';
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
      const categories = [...new Set(result.items.map((p) => p.category))].sort();
      const select = $('#category');
      const chosen = select.value;
      select.replaceChildren(el('option', { value: '', text: 'All categories' }),
        ...categories.map((c) => el('option', { value: c, text: c })));
      select.value = categories.includes(chosen) ? chosen : '';
      $('#category-options').replaceChildren(...categories.map((c) => el('option', { value: c })));
    } catch {
      // The filter stays at "All categories"; the catalog reports its own errors.
    }
  }

  async function showProduct(sku) {
    const request = ++state.productRequest;
    const current = () => request === state.productRequest;
    $('#product-name').textContent = 'Loading…';
    for (const id of ['category', 'price', 'description', 'stock']) $(`#product-${id}`).textContent = '';
    $('#add-form').dataset.sku = sku;
    let product;
    try {
      product = await api(`/api/products/${encodeURIComponent(sku)}`);
    } catch (error) {
      if (!current()) return;
      $('#product-name').textContent = 'Product not available';
      return report(error);
    }
    if (!current()) return;
    state.products.set(sku, product);
    $('#product-name').textContent = product.name;
    $('#product-category').textContent = product.category;
    $('#product-price').textContent = money(product.price, product.currency);
    $('#product-description').textContent = product.description;
    const stock = $('#product-stock');
    stock.textContent = 'Checking stock…';
    stock.className = 'stock';
    const query = new URLSearchParams({ skuCode: sku, quantity: '1' }).toString();
    try {
      const inStock = await api(`/api/inventory?${query}`); // one skuCode answers true or false
      if (!current()) return;
      stock.textContent = inStock ? 'In stock' : 'Out of stock';
      stock.classList.add(inStock ? 'in' : 'out');
    } catch (error) {
      if (!current()) return;
      stock.textContent = error.status === 404 ? 'Not stocked' : `Stock unknown: ${error.message}`;
      stock.classList.add('out');
    }
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

  function addToCart(sku, quantity) {
    const cart = readCart();
    cart[sku] = Math.min(MAX_LINE_QUANTITY, (cart[sku] || 0) + quantity);
    writeCart(cart);
    notify(`Added ${quantity} × ${state.products.get(sku)?.name || sku} to the cart.`);
  }

  function setQuantity(sku, quantity) {
    const cart = readCart();
    if (quantity > 0) cart[sku] = quantity;
    else delete cart[sku];
    writeCart(cart);
  }

  function renderCart() {
    const items = cartItems();
    $('#cart-empty').hidden = items.length > 0;
    $('#cart-form').hidden = items.length === 0;
    clearErrors($('#cart-form'));
    // Row i is line i of the order, so "/items/i/..." errors land on the right row.
    const rows = items.map(({ skuCode, quantity }, i) => {
      const product = state.products.get(skuCode);
      const name = product?.name || skuCode;
      const input = el('input', { type: 'number', id: `cart-quantity-${i}`, min: 1, max: MAX_LINE_QUANTITY, step: 1,
        value: quantity, required: true, 'data-field': `items/${i}/quantity` });
      input.addEventListener('change', () => {
        const value = Number(input.value);
        if (Number.isInteger(value) && value >= 1 && value <= MAX_LINE_QUANTITY) setQuantity(skuCode, value);
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
        el('td', {}, link),
        el('td', { class: 'num', text: product ? money(product.price, product.currency) : '…' }),
        el('td', {}, el('label', { for: input.id, class: 'visually-hidden', text: `Quantity of ${name}` }), input),
        el('td', { class: 'num line-total' }),
        el('td', {}, remove));
    });
    $('#cart-lines').replaceChildren(...rows);
    renderCartTotals();
    // The cart outlives the page: fetch names and prices of SKUs not seen in this visit, then draw again.
    const unknown = items.filter((item) => !state.products.has(item.skuCode));
    if (!unknown.length) return;
    const lookups = unknown.map((item) => api(`/api/products/${encodeURIComponent(item.skuCode)}`));
    Promise.allSettled(lookups).then((answers) => {
      const found = answers.filter((answer) => answer.status === 'fulfilled').map((answer) => answer.value);
      for (const product of found) state.products.set(product.sku, product);
      if (found.length && !$('#view-cart').hidden) renderCart();
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

  async function placeOrder(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const items = cartItems();
    if (!validForm(form) || !items.length) return;
    const body = { items };
    // One Idempotency-Key per cart content, kept until the order is confirmed: retrying after a lost
    // answer replays the same order instead of placing a second one. A changed cart gets a new key.
    let pending = readJson(localStorage, STORE.pendingOrder, null);
    if (!pending || pending.body !== JSON.stringify(body)) {
      pending = { key: crypto.randomUUID(), body: JSON.stringify(body) };
      localStorage.setItem(STORE.pendingOrder, JSON.stringify(pending));
    }
    const button = $('#place-order');
    button.disabled = true;
    $('#order-result').hidden = true;
    try {
      const headers = { 'Idempotency-Key': pending.key };
      const order = await api('/api/orders', { method: 'POST', body, auth: true, headers });
      localStorage.removeItem(STORE.pendingOrder);
      writeCart({});
      renderCart();
      const total = money(order.total, order.currency);
      $('#order-result').replaceChildren(
        el('p', {}, 'Order ', el('strong', { text: order.orderNumber }), ` is placed. Total ${total}.`),
        el('p', {}, el('a', { href: '#/orders', text: 'See my orders' })));
      $('#order-result').hidden = false;
    } catch (error) {
      if (error.problem?.type?.endsWith('idempotency-key-reused')) localStorage.removeItem(STORE.pendingOrder);
      report(error, form);
      markShortages(error.problem?.shortages, items);
    } finally {
      button.disabled = false;
    }
  }

  /** A 409 names short SKUs in a "shortages" extension rather than in field errors: mark those lines too. */
  function markShortages(shortages, items) {
    if (!Array.isArray(shortages)) return;
    for (const { skuCode, available } of shortages) {
      const input = $(`#cart-quantity-${items.findIndex((item) => item.skuCode === skuCode)}`);
      if (input) markField(input, `Only ${available} available.`);
    }
  }

  // --- my orders -------------------------------------------------------------------------------------------

  async function loadOrders() {
    const list = $('#order-list');
    const empty = $('#orders-empty');
    if (!state.session) {
      list.replaceChildren();
      renderPager('orders', 0, 0);
      empty.textContent = 'Sign in to see your orders.';
      empty.hidden = false;
      return notify('Sign in to see your orders.', { signIn: true });
    }
    const params = new URLSearchParams({ page: String(state.ordersPage), size: String(ORDERS_PAGE_SIZE) });
    // An admin's unfiltered list is everybody's orders; "My orders" asks for the admin's own.
    if (isAdmin() && state.session.claims.sub) params.set('customer', state.session.claims.sub);
    const query = params.toString();
    list.setAttribute('aria-busy', 'true');
    try {
      const result = await api(`/api/orders?${query}`, { auth: true });
      list.replaceChildren(...result.items.map(renderOrder));
      empty.textContent = 'You have no orders yet.';
      empty.hidden = result.items.length > 0;
      renderPager('orders', result.page, result.totalPages);
    } catch (error) {
      report(error);
    } finally {
      list.removeAttribute('aria-busy');
    }
  }

  function renderOrder(order) {
    const lines = order.items.map((line) =>
      el('li', { text: `${line.quantity} × ${line.name} — ${money(line.lineTotal, order.currency)}` }));
    const article = el('article', { class: 'card order' },
      el('header', { class: 'order-head' },
        el('h2', { text: order.orderNumber }),
        el('span', { class: `status status-${order.status.toLowerCase()}`, text: order.status })),
      el('p', { class: 'muted', text: `Placed ${new Date(order.placedAt).toLocaleString()}` }),
      el('ul', { class: 'order-lines' }, ...lines),
      el('p', {}, 'Total ', el('strong', { text: money(order.total, order.currency) })));
    if (order.cancelReason) article.append(el('p', { class: 'muted', text: `Cancelled: ${order.cancelReason}` }));
    if (order.status === 'PLACED') article.append(cancelForm(order.orderNumber));
    return el('li', {}, article);
  }

  /** The reason sits in a disclosure, so cancelling takes a deliberate second step. */
  function cancelForm(orderNumber) {
    const id = `cancel-reason-${orderNumber}`;
    const form = el('form', { class: 'cancel-form', novalidate: true },
      el('div', { class: 'field' }, el('label', { for: id, text: 'Reason (optional)' }),
        el('input', { id, name: 'reason', maxlength: 500, 'data-field': 'reason' })),
      el('p', { class: 'form-error', 'data-form-error': true }),
      el('button', { type: 'submit', class: 'danger', text: 'Cancel order' }));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const button = form.querySelector('button');
      button.disabled = true;
      const body = { reason: form.elements.reason.value.trim() || 'cancelled in the storefront' };
      try {
        await api(`/api/orders/${encodeURIComponent(orderNumber)}/cancel`, { method: 'POST', auth: true, body });
        notify(`Order ${orderNumber} is cancelled.`);
        await loadOrders();
      } catch (error) {
        report(error, form);
        button.disabled = false;
      }
    });
    return el('details', { class: 'cancel' }, el('summary', { text: 'Cancel this order…' }), form);
  }

  // --- admin ----------------------------------------------------------------------------------------------

  async function createProduct(event) {
    event.preventDefault();
    const form = event.currentTarget;
    if (!validForm(form)) return;
    const data = Object.fromEntries([...new FormData(form)].map(([name, value]) => [name, value.trim()]));
    const body = { sku: data.sku, name: data.name, category: data.category, price: Number(data.price) };
    if (data.description) body.description = data.description;
    if (data.currency) body.currency = data.currency.toUpperCase();
    try {
      const product = await api('/api/products', { method: 'POST', auth: true, body });
      state.products.set(product.sku, product);
      form.reset();
      $('#r-sku').value = product.sku;
      notify(`Created ${product.name} (${product.sku}). It has no stock yet: use the restock form.`);
      loadCategories();
    } catch (error) {
      report(error, form);
    }
  }

  async function restock(event) {
    event.preventDefault();
    const form = event.currentTarget;
    if (!validForm(form)) return;
    const sku = form.elements.sku.value.trim();
    const body = { quantity: Number(form.elements.quantity.value), mode: form.elements.mode.value };
    try {
      const level = await api(`/api/inventory/${encodeURIComponent(sku)}`, { method: 'PUT', auth: true, body });
      notify(`${level.skuCode}: ${level.available} available (low-stock threshold ${level.lowStockThreshold}).`);
      form.elements.quantity.value = '';
    } catch (error) {
      report(error, form);
    }
  }

  // --- views (hash routing: #/catalog, #/product/<sku>, #/cart, #/orders, #/admin) ------------------------

  function route({ focus = true } = {}) {
    const match = /^#\/([a-z]+)(?:\/(.+))?$/.exec(location.hash) || [];
    let view = VIEWS.includes(match[1]) ? match[1] : 'catalog';
    if (view === 'product' && !match[2]) view = 'catalog';
    if (view === 'admin' && !isAdmin()) {
      notify('The admin pages need the admin role.', { signIn: !state.session });
      view = 'catalog';
    }
    for (const name of VIEWS) $(`#view-${name}`).hidden = name !== view;
    for (const link of document.querySelectorAll('[data-nav]')) {
      if (link.dataset.nav === (view === 'product' ? 'catalog' : view)) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    if (view === 'catalog') loadCatalog();
    if (view === 'product') showProduct(decodeURIComponent(match[2]));
    if (view === 'cart') renderCart();
    if (view === 'orders') loadOrders();
    if (focus) $(`#view-${view} h1`).focus(); // keyboard and screen reader users land on the new view
  }

  function bindEvents() {
    $('#sign-in').addEventListener('click', signIn);
    $('#notice-sign-in').addEventListener('click', signIn);
    $('#sign-out').addEventListener('click', signOut);
    $('#notice-close').addEventListener('click', () => ($('#notice').hidden = true));
    $('#search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      Object.assign(state.catalog, { q: $('#q').value.trim(), page: 0 });
      loadCatalog();
    });
    for (const id of ['#category', '#sort']) {
      $(id).addEventListener('change', () => {
        Object.assign(state.catalog, { category: $('#category').value, sort: $('#sort').value, page: 0 });
        loadCatalog();
      });
    }
    for (const [suffix, delta] of [['prev', -1], ['next', 1]]) {
      $(`#catalog-${suffix}`).addEventListener('click', () => { state.catalog.page += delta; loadCatalog(); });
      $(`#orders-${suffix}`).addEventListener('click', () => { state.ordersPage += delta; loadOrders(); });
    }
    $('#add-form').addEventListener('submit', (event) => {
      event.preventDefault();
      if (validForm(event.currentTarget)) addToCart(event.currentTarget.dataset.sku, Number($('#add-quantity').value));
    });
    $('#cart-form').addEventListener('submit', placeOrder);
    $('#product-form').addEventListener('submit', createProduct);
    $('#restock-form').addEventListener('submit', restock);
    window.addEventListener('hashchange', () => route());
    window.addEventListener('storage', (event) => {
      if (event.key !== STORE.cart) return; // another tab changed the cart
      renderCartCount();
      if (!$('#view-cart').hidden) renderCart();
    });
  }

  async function start() {
    bindEvents();
    renderCartCount();
    try {
      state.config = await getJson('/storefront/config.json');
    } catch (error) {
      return notify(`The storefront could not load its configuration (${error.message}).`, { error: true });
    }
    try {
      state.oidc = await getJson(`${state.config.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
    } catch {
      notify('Sign-in is unavailable right now; you can still browse the catalog.', { error: true });
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
    loadCategories();
    route({ focus: false });
  }

  start();
})();

/*
 * Site-wide script for signed-in pages: one Socket.IO connection to /chat per page, the unread badge
 * in the navigation, a patient's live care-team replies on their chart, server restarts, and idle
 * sign-out. The chat page (chat.js) reuses this connection through window.Portal.
 * No innerHTML anywhere: every server value reaches the page through textContent.
 */
(function () {
  "use strict";

  // Forms marked data-once submit once: a double click must not post twice (the server also
  // de-duplicates by submission id; this spares the second round trip).
  Array.prototype.forEach.call(document.querySelectorAll("form[data-once]"), function (form) {
    form.addEventListener("submit", function (event) {
      if (form.getAttribute("data-submitted")) {
        event.preventDefault();
        return;
      }
      form.setAttribute("data-submitted", "true");
      form.setAttribute("aria-busy", "true");
    });
  });

  var body = document.body;
  var userId = body.getAttribute("data-user-id");
  if (!userId || typeof window.io !== "function") {
    return;
  }

  var IDLE_MINUTES = parseFloat(body.getAttribute("data-idle-minutes") || "15") || 15;
  var IDLE_GRACE_MS = 5000;
  var ACTIVITY_KEY = "portal.lastServerActivity";
  var SESSION_END_CODES = ["idle_timeout", "unauthenticated", "session_expired", "signed_out", "provider_logout", "revoked"];
  var ACTIVE_EVENTS = ["send", "typing"];

  var socket = window.io("/chat", { reconnectionDelay: 1000, reconnectionDelayMax: 10000 });
  var unread = {};
  var leaving = false;

  /* --- idle handling ------------------------------------------------------------------------- */

  // The server's idle clock restarts on every request and Socket.IO event, from any tab: remember
  // the last one (shared between tabs) and leave for the sign-in page once the session must be dead.
  function touch() {
    try {
      window.localStorage.setItem(ACTIVITY_KEY, String(Date.now()));
    } catch (e) { /* storage may be disabled: this tab's own clock still works */ }
    localActivity = Date.now();
  }

  function lastActivity() {
    var shared = 0;
    try {
      shared = parseInt(window.localStorage.getItem(ACTIVITY_KEY) || "0", 10) || 0;
    } catch (e) { shared = 0; }
    return Math.max(shared, localActivity);
  }

  function signIn(reason) {
    if (leaving) {
      return;
    }
    leaving = true;
    socket.disconnect();
    window.location.assign("/auth/signin?reason=" + encodeURIComponent(reason || "idle_timeout"));
  }

  var localActivity = Date.now();
  touch();  // this page load was a request
  window.setInterval(function () {
    if (Date.now() - lastActivity() > IDLE_MINUTES * 60000 + IDLE_GRACE_MS) {
      signIn("idle_timeout");
    }
  }, 5000);

  socket.on("connect_error", function (err) {
    var reason = err && err.message;
    if (SESSION_END_CODES.indexOf(reason) !== -1) {
      signIn(reason);
    }
  });

  // Signing out here: the server's "session ended" notice must not race the sign-out redirect.
  var signOutForm = document.querySelector("form.signout");
  if (signOutForm) {
    signOutForm.addEventListener("submit", function () { leaving = true; });
  }

  socket.on("session_ended", function (data) {
    var reason = (data && data.reason) || "idle_timeout";
    if (reason === "replaced") {
      // Signed in again in this browser: the cookie already names the new session.
      window.setTimeout(function () { socket.connect(); }, 500);
      return;
    }
    signIn(reason);
  });

  /* --- restarts -------------------------------------------------------------------------------- */

  // A worker going down asks its clients to reconnect; the load balancer sends them to another one.
  socket.on("server_shutdown", function () {
    socket.disconnect();
    window.setTimeout(function () {
      if (!leaving) {
        socket.connect();
      }
    }, 500 + Math.floor(Math.random() * 1500));
  });

  /* --- unread badge ---------------------------------------------------------------------------- */

  function totalUnread() {
    return Object.keys(unread).reduce(function (sum, id) {
      return sum + (unread[id] > 0 ? unread[id] : 0);
    }, 0);
  }

  function renderBadges() {
    var total = totalUnread();
    var badges = document.querySelectorAll("[data-unread-badge]");
    Array.prototype.forEach.call(badges, function (badge) {
      badge.textContent = total > 0 ? String(total) : "";
      badge.hidden = total === 0;
      badge.title = total === 1 ? "1 unread message" : total + " unread messages";
    });
    document.dispatchEvent(new CustomEvent("portal:unread", { detail: { conversations: Object.assign({}, unread), total: total } }));
  }

  socket.on("unread", function (data) {
    if (!data || typeof data !== "object") {
      return;
    }
    if (data.conversations && typeof data.conversations === "object") {
      unread = Object.assign({}, data.conversations);
    } else if (typeof data.conversation_id === "string" && typeof data.unread === "number") {
      unread[data.conversation_id] = data.unread;
    }
    renderBadges();
  });

  /* --- a patient's live replies (chart page) --------------------------------------------------- */

  function formatTime(iso) {
    var when = new Date(iso);
    return isNaN(when.getTime()) ? "" : when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  socket.on("reply", function (message) {
    var feed = document.querySelector("[data-live-replies]");
    if (!feed || !message || typeof message.body !== "string") {
      return;
    }
    var item = document.createElement("li");
    var who = document.createElement("strong");
    who.textContent = (message.sender && message.sender.name) || "Your care team";
    var text = document.createElement("span");
    text.className = "body";
    text.textContent = ": " + message.body;
    var when = document.createElement("time");
    when.className = "hint";
    when.dateTime = message.sent_at || "";
    when.textContent = " · " + formatTime(message.sent_at);
    item.appendChild(who);
    item.appendChild(text);
    item.appendChild(when);
    feed.appendChild(item);
  });

  /* --- shared with chat.js --------------------------------------------------------------------- */

  window.Portal = {
    socket: socket,
    userId: userId,
    touch: touch,
    formatTime: formatTime,
    unread: function () { return Object.assign({}, unread); },
    // Emit with an ack; the callback always runs once: with the server's answer or a timeout error.
    call: function (event, payload, callback, timeoutMs) {
      // Only what the person does keeps the session alive; automatic catch-up, receipts and
      // presence answers do not (the server applies the same rule).
      if (ACTIVE_EVENTS.indexOf(event) !== -1) {
        touch();
      }
      socket.timeout(timeoutMs || 10000).emit(event, payload, function (err, answer) {
        if (err) {
          callback({ ok: false, error: { code: "timeout", message: "No answer from the server. Check your connection." } });
        } else {
          callback(answer || { ok: false, error: { code: "internal", message: "Empty answer from the server." } });
        }
      });
    }
  };
})();

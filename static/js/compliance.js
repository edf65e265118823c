/* Compliance console: the live audit feed over Socket.IO (namespace /audit).
   Events carry identifiers only; the DOM is built with textContent, never innerHTML. */
(function () {
  "use strict";

  var MAX_ITEMS = 100;
  var list = document.querySelector("[data-audit-feed]");
  var status = document.getElementById("feed-status");
  if (!list || !status) {
    return;
  }

  function setStatus(state, text) {
    status.setAttribute("data-state", state);
    status.textContent = text;
  }

  if (typeof window.io !== "function") {
    setStatus("offline", "The live feed is unavailable in this browser.");
    return;
  }

  // data-event-url is the detail URL of seq 0; swap in the real seq.
  var eventUrl = list.getAttribute("data-event-url") || "";

  function eventLink(seq) {
    var link = document.createElement("a");
    link.href = eventUrl.replace(/0$/, String(seq));
    link.textContent = "#" + seq;
    return link;
  }

  function part(text, className) {
    var span = document.createElement("span");
    if (className) {
      span.className = className;
    }
    span.textContent = text;
    return span;
  }

  function render(event) {
    var item = document.createElement("li");
    item.setAttribute("data-seq", String(event.seq));
    if (event.outcome === "denied" || event.outcome === "error") {
      item.className = "denied";
    } else if (typeof event.action === "string" && event.action.indexOf("break_glass") === 0) {
      item.className = "flagged";
    }
    item.appendChild(eventLink(event.seq));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(part(String(event.time || "").replace("T", " ").replace(/\.\d+Z$/, " UTC"), "hint"));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(part(String(event.action || "")));
    item.appendChild(document.createTextNode(" "));
    item.appendChild(part(String(event.outcome || ""), "pill pill-" + (event.outcome === "allowed" ? "allowed" : "denied")));
    var who = event.actor_id ? " by " + event.actor_id + (event.actor_role ? " (" + event.actor_role + ")" : "") : "";
    var what = event.patient_id ? " on patient " + event.patient_id : "";
    item.appendChild(document.createTextNode(who + what));
    list.insertBefore(item, list.firstChild);
    while (list.children.length > MAX_ITEMS) {
      list.removeChild(list.lastChild);
    }
  }

  var socket = window.io("/audit", { transports: ["websocket", "polling"] });
  socket.on("connect", function () { setStatus("live", "Live: new audit events appear below as they are recorded."); });
  socket.on("disconnect", function () { setStatus("reconnecting", "Connection lost, reconnecting…"); });
  socket.on("connect_error", function () { setStatus("offline", "The live feed could not connect; retrying."); });
  socket.on("audit_event", render);
  socket.on("session_ended", function (data) {
    socket.disconnect();
    window.location.assign("/auth/signin?reason=" + encodeURIComponent((data && data.reason) || "signed_out"));
  });
})();

// Refresh the page's data in place every 10 s (or on the button), keeping the filters: the URL
// carries them, so the same URL is fetched and its <main> swapped in. No libraries.
(function () {
  "use strict";
  var PERIOD = 10000;
  var stamp = document.getElementById("refreshed");
  async function refresh() {
    try {
      var response = await fetch(window.location.href, { headers: { "Accept": "text/html" }, cache: "no-store" });
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      var page = new DOMParser().parseFromString(await response.text(), "text/html");
      var fresh = page.querySelector("main");
      var current = document.querySelector("main");
      if (fresh && current) { current.replaceWith(fresh); }
      if (stamp) { stamp.textContent = "updated " + new Date().toLocaleTimeString(); }
    } catch (error) {
      if (stamp) { stamp.textContent = "refresh failed (" + error.message + "); retrying"; }
    }
  }
  var button = document.getElementById("refresh");
  if (button) { button.addEventListener("click", refresh); }
  window.setInterval(refresh, PERIOD);
})();

// Where the signed-in admin's browser state is kept between the `setup`
// project (which makes the admin) and the projects that reuse it, and the
// admin's name and password.
import * as path from "node:path";

export const ADMIN_STATE = path.join(__dirname, ".auth", "admin.json");

/** The first admin: made by the setup test, or already there (MARQUEE_ADMIN_PASSWORD). */
export const ADMIN = {
  username: process.env.MARQUEE_ADMIN_USER || "admin",
  password: process.env.MARQUEE_ADMIN_PASSWORD || "e2e admin password",
};
